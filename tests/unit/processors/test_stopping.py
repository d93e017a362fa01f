"""A worker process stops within its deadline after SIGTERM, whatever it waits for; twice: at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dspex.processors.stopping import FORCED_EXIT_CODE, StopGuard, child_pids, end_children

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

# A worker whose loop waits on a thread that never answers (a commit or a close while the broker
# is gone): its graceful stop never finishes. With GRACEFUL=1 the stop request ends the loop.
WORKER = textwrap.dedent(
    """
    import asyncio, logging, sys, threading
    from dspex.processors.stopping import StopGuard

    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    deadline, graceful = float(sys.argv[1]), sys.argv[2] == "1"

    async def main():
        stopped = asyncio.Event()
        guard = StopGuard("test-worker", request_stop=stopped.set, left_undone=lambda: "offsets x@3",
                          deadline_s=deadline)
        guard.install(asyncio.get_running_loop())
        print("ready", flush=True)
        if graceful:
            await stopped.wait()
            return
        await asyncio.get_running_loop().run_in_executor(None, threading.Event().wait)  # stuck

    asyncio.run(main())
    """
)


def start(deadline: float, graceful: bool = False) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(deadline), "1" if graceful else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def stop(process: subprocess.Popen[str], *signals: signal.Signals, gap: float = 0.3) -> tuple[float, str]:
    started = time.monotonic()
    for sig in signals:
        process.send_signal(sig)
        time.sleep(gap)
    output, _ = process.communicate(timeout=30)
    return time.monotonic() - started, output


def test_a_stop_stuck_on_a_thread_is_forced_at_the_deadline_with_what_was_left() -> None:
    took, output = stop(start(deadline=1.0), signal.SIGTERM)
    assert 0.9 < took < 6.0, took
    assert "SIGTERM received; stopping within 1.0 s" in output
    assert "exiting at once (no clean stop within 1.0 s); offsets x@3" in output


def test_the_forced_exit_code_says_it_was_forced() -> None:
    process = start(deadline=0.5)
    stop(process, signal.SIGTERM)
    assert process.returncode == FORCED_EXIT_CODE


def test_a_second_signal_exits_at_once() -> None:
    took, output = stop(start(deadline=60.0), signal.SIGTERM, signal.SIGINT)
    assert took < 6.0, took
    assert "exiting at once (a second SIGINT)" in output


def test_a_clean_stop_exits_zero_without_waiting_for_the_deadline() -> None:
    process = start(deadline=60.0, graceful=True)
    took, output = stop(process, signal.SIGTERM, gap=0.0)
    assert process.returncode == 0 and took < 6.0, (took, output)
    assert "exiting at once" not in output


def test_child_processes_are_found_and_ended() -> None:
    # a stand-in worker with a child of its own (a sandbox); only its descendants are touched
    spawn = "import subprocess, sys, time; "
    spawn += "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    spawn += "print('ready', flush=True); time.sleep(60)"
    worker = subprocess.Popen([sys.executable, "-c", spawn], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        assert worker.pid in child_pids()
        [sandbox] = child_pids(worker.pid)
        assert end_children(grace_s=2.0, parent=worker.pid) == []  # it went on SIGTERM, no SIGKILL
        assert worker.poll() is None  # the stand-in itself is not its own descendant
    finally:
        worker.kill()
        worker.communicate()  # reaps it and closes its pipe
    assert (
        not Path(f"/proc/{sandbox}").exists() or "Z" in Path(f"/proc/{sandbox}/stat").read_text().split()[2]
    )


def test_force_runs_once_even_when_the_watchdog_and_a_second_signal_race() -> None:
    exits: list[int] = []
    guard = StopGuard("w", request_stop=lambda: None, exit_process=exits.append)
    guard.force("first")
    guard.force("second")
    assert exits == [FORCED_EXIT_CODE]
