"""Helpers shared by the benchmarks: the simulated LM in a subprocess, CPU time, tables, child runs.

Benchmarks are scripts, not tests: each prints a markdown section to stdout (``bench/run_all.py``
collects them into ``bench/RESULTS.md``).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil

if TYPE_CHECKING:
    from dspex.dev.broker import DevBroker

__all__ = [
    "REPO",
    "CpuClock",
    "SimProcess",
    "free_port",
    "machine_summary",
    "markdown_table",
    "own_broker",
    "process_cpu_s",
    "run_child_json",
    "start_sim",
]

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_s() -> float:
    """User + system CPU seconds this process has used so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuClock:
    """Wall and CPU time of this process over a block: ``with CpuClock() as clock: ...``."""

    wall_s: float = 0.0
    cpu_s: float = 0.0

    def __enter__(self) -> CpuClock:
        self._wall0, self._cpu0 = time.perf_counter(), process_cpu_s()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall_s = time.perf_counter() - self._wall0
        self.cpu_s = process_cpu_s() - self._cpu0


@dataclass
class SimProcess:
    """A running simulated LM subprocess."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/admin"

    def cpu_s(self) -> float:
        """CPU seconds the simulated LM process has used so far."""
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.admin_url}/stats", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def reset(self) -> None:
        httpx.post(f"{self.admin_url}/reset", timeout=10).raise_for_status()


@contextmanager
def own_broker(name: str) -> Iterator[DevBroker]:
    """A dev broker of the benchmark's own on a free port, its data in a temporary directory; stopped
    and removed on exit."""
    from dspex.dev.broker import DevBroker

    work_dir = Path(tempfile.mkdtemp(prefix=f"dspex-bench-{name}-"))
    broker = DevBroker(port=free_port(), data_dir=work_dir / "broker", startup_timeout=120.0)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


@contextmanager
def start_sim(latency: float = 0.1, **knobs: Any) -> Iterator[SimProcess]:
    """Start ``python -m dspex.testing.sim_lm`` on a free port; stop it on exit.

    ``knobs`` become command-line options (``jitter=0.01`` -> ``--jitter 0.01``).
    """
    with tempfile.TemporaryDirectory(prefix="dspex-bench-sim-") as tmp:
        port_file = Path(tmp) / "port"
        argv = [sys.executable, "-m", "dspex.testing.sim_lm", "--port", "0", "--port-file", str(port_file)]
        argv += ["--latency", str(latency), "--log-level", "WARNING"]
        for key, value in knobs.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL)
        try:
            yield SimProcess(process, _wait_for_port(process, port_file))
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for_port(process: subprocess.Popen[bytes], port_file: Path, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the simulated LM exited with code {process.returncode}")
        if port_file.exists():
            return int(port_file.read_text())
        time.sleep(0.05)  # polling a process we just started: there is no event to wait on
    raise RuntimeError(f"the simulated LM did not start listening within {timeout_s} s")


def sim_completions(base_url: str) -> int:
    """The simulated LM's answered requests so far (its ``completions_ok`` counter)."""
    stats = httpx.get(base_url.removesuffix("/v1") + "/admin/stats", timeout=10).json()
    return int(stats["completions_ok"])


def run_child_json(
    argv: Sequence[str], *, timeout_s: float = 600.0, env: dict[str, str] | None = None
) -> Any:
    """Run a child process (the repository first on its path) and parse the JSON on its last stdout line."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    merged = {**os.environ, "PYTHONPATH": path, **(env or {})}
    done = subprocess.run(
        list(argv), cwd=REPO, env=merged, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{' '.join(argv)} printed nothing:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get a sensible precision."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_format(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _format(cell: Any) -> str:
    if isinstance(cell, float):
        return f"{cell:,.0f}" if abs(cell) >= 100 else f"{cell:.2f}"
    return str(cell)


def machine_summary() -> str:
    """One line describing the machine: CPU count, Python, load average."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average {load}"
