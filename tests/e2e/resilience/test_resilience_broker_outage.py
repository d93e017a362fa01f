"""Every worker kind through a broker outage: quiet while Kafka is gone, stopped within 10 s.

One broker of the test's own (the session broker is never stopped), one worker of each kind
(aggregate, score, predict, optimize) and a job that completes before the outage:

1. the broker stops for OUTAGE_S: each worker logs at most 10 lines meanwhile (one warning that
   Kafka is unreachable, a summary at most every 10 s; before folding, ~120 lines a second),
   then one line when Kafka answers again, and a second job completes;
2. the broker stops again and every worker gets SIGTERM while it is down: each exits within
   10 s (the aggregator used to wait in faust's producer flush for as long as the broker was
   gone), the predictor at once on a second SIGTERM, and no child process of a worker outlives it.

Issue 18 describes a 60 s outage; 30 s keeps the suite's time down and still covers what the 60 s
were for: more than one summary period (10 s) and past the session timeout (6 s with
--fast-groups), so every member loses its partitions and gets them back.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from resilience_helpers import Pipeline, assert_exact, devset, pipeline_of, sim_lm, wait_for

from dspex.dev import DevBroker
from dspex.dev.stack import WorkerProcess
from dspex.errors import KafkaError
from dspex.processors.stopping import child_pids
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(400)]

OUTAGE_S = 30.0
MAX_LINES = 10  # per worker during the outage (issue 18)
STOP_WITHIN_S = 10.0
SECOND_SIGNAL_WITHIN_S = 3.0
UNREACHABLE = "Kafka is unreachable"
SUMMARY = "Kafka still unreachable"
BACK = "Kafka answers again"


def test_every_worker_kind_is_quiet_through_an_outage_and_stops_within_10_s(
    broker_factory: Callable[..., DevBroker], topic_prefix: str, tmp_path: Path
) -> None:
    broker = broker_factory()
    with (
        SimulatedLMServer(latency=0.02) as sim,
        pipeline_of(broker.bootstrap, topic_prefix, tmp_path / "stack", broker=broker) as pipeline,
    ):
        workers = [
            pipeline.start("aggregate"),
            pipeline.start("score"),
            pipeline.start("predict", "--allow-api-base", sim.base_url),
            pipeline.start("optimize"),
        ]
        pipeline.wait_ready()
        complete(pipeline, sim, 50, seed=61)

        # 1. an outage: a few lines per worker, then one line when Kafka is back
        before = {worker.name: log_lines(worker) for worker in workers}
        broker.stop()
        time.sleep(OUTAGE_S)
        during = {worker.name: log_lines(worker)[len(before[worker.name]) :] for worker in workers}
        broker.start()
        for worker in workers:
            logged = during[worker.name]
            assert len(logged) <= MAX_LINES, f"{worker.name} logged {len(logged)} lines:\n" + "\n".join(
                logged
            )
            assert count(logged, UNREACHABLE) == 1, (worker.name, logged)
            assert 1 <= count(logged, SUMMARY) <= OUTAGE_S // 10 + 1, (worker.name, logged)
        pipeline.stack.check_running()
        wait_for(lambda: all(count(log_lines(w), BACK) >= 1 for w in workers), 90, "'Kafka answers again'")
        complete(pipeline, sim, 50, seed=62)

        # 2. SIGTERM while the broker is down: every kind exits within 10 s; twice: at once
        seen = {worker.name: count(log_lines(worker), UNREACHABLE) for worker in workers}
        broker.stop()
        wait_for(
            lambda: all(count(log_lines(w), UNREACHABLE) > seen[w.name] for w in workers),
            30,
            "every worker to see the second outage",
        )
        children = {worker.name: descendants(worker.pid) for worker in workers}
        signalled = time.monotonic()
        for worker in workers:
            worker.process.send_signal(signal.SIGTERM)
        predictor = workers[2]
        time.sleep(1.0)
        predictor.process.send_signal(signal.SIGTERM)
        second = time.monotonic()
        exits = exit_times(workers, signalled, STOP_WITHIN_S + 5)
        assert exits[predictor.name] - (second - signalled) <= SECOND_SIGNAL_WITHIN_S, exits
        print(f"\nlines logged during the outage: { {name: len(lines) for name, lines in during.items()} }")
        print(f"seconds from SIGTERM to exit, broker down (predictor: 2nd SIGTERM after 1 s): {exits}")
        slow = {name: took for name, took in exits.items() if took > STOP_WITHIN_S}
        assert not slow, f"exit times after SIGTERM (s): {exits}"
        for worker in workers:
            alive = [pid for pid in children[worker.name] if Path(f"/proc/{pid}").exists()]
            assert not alive, f"{worker.name}'s child processes {alive} outlived it"


def complete(pipeline: Pipeline, sim: SimulatedLMServer, n: int, seed: int) -> None:
    job_id = submit(pipeline, sim, n, seed)
    status, _ = pipeline.finish(job_id, timeout=120)
    assert_exact(pipeline, job_id, status, n)


def submit(pipeline: Pipeline, sim: SimulatedLMServer, n: int, seed: int, attempts: int = 5) -> str:
    # Just after a restart the broker may answer the client's offset reads with a passing
    # UNKNOWN_LEADER_EPOCH; the client does not retry it (the workers' behaviour is under test here)
    for _ in range(attempts - 1):
        try:
            return pipeline.submit(devset(n, seed=seed), sim_lm(sim.base_url))
        except KafkaError:
            time.sleep(2.0)
    return pipeline.submit(devset(n, seed=seed), sim_lm(sim.base_url))


def log_lines(worker: WorkerProcess) -> list[str]:
    return worker.log_path.read_text(errors="replace").splitlines()


def count(lines: list[str], text: str) -> int:
    return sum(text in line for line in lines)


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    frontier = [pid]
    while frontier:
        frontier = [child for parent in frontier for child in child_pids(parent)]
        found += frontier
    return found


def exit_times(workers: list[WorkerProcess], since: float, timeout: float) -> dict[str, float]:
    """Seconds from ``since`` until each worker exited (``timeout`` + for one still running)."""
    exits: dict[str, float] = {}
    deadline = since + timeout
    while len(exits) < len(workers) and time.monotonic() < deadline:
        for worker in workers:
            if worker.name not in exits and not worker.alive:
                exits[worker.name] = round(time.monotonic() - since, 2)
        time.sleep(0.05)
    return {w.name: exits.get(w.name, float("inf")) for w in workers}
