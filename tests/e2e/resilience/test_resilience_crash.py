"""Processes and the broker fail mid-job; the job still completes with every task counted once.

* a predictor killed with SIGKILL (no drain, no commit) during a 10,000-example job: its partitions
  move to the other predictor, its uncommitted tasks run again, the aggregate de-duplicates them;
* a broker of the test's own stopped and started again on the same data directory: every worker
  process reconnects on its own (none is restarted) and the job completes with exact counts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from resilience_helpers import assert_exact, devset, pipeline_of, sim_lm

from dspex.dev import DevBroker
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_predictor_killed_mid_job_loses_and_doubles_nothing(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    n = 10_000
    with (
        SimulatedLMServer(latency=0.01) as sim,
        pipeline_of(kafka_bootstrap, topic_prefix, tmp_path / "stack") as pipeline,
    ):
        pipeline.start("aggregate")
        pipeline.start("score")
        victim, survivor = (pipeline.start("predict", "--allow-api-base", sim.base_url) for _ in range(2))
        pipeline.wait_ready()

        job_id = pipeline.submit(devset(n, seed=41), sim_lm(sim.base_url))
        sim.control.wait_until(lambda stats: stats["completions_ok"] >= n // 4, timeout=180)
        victim.kill()

        status, _ = pipeline.finish(job_id, timeout=300)
        assert_exact(pipeline, job_id, status, n)
        assert survivor.alive
        assert sim.control.stats()["completions_ok"] >= n  # redone tasks call the LM again


# Known bug, recorded on issue 8: after the broker comes back, the confluent-kafka workers rejoin and
# finish every task, but the faust aggregator logs "Timer commit is overlapping" and never rejoins its
# group, so the job's status stops short. Kept running (not skipped) so the day it passes shows.
@pytest.mark.xfail(reason="faust aggregator does not rejoin its group after a broker restart", strict=False)
def test_a_broker_restart_mid_job_is_survived_by_every_process(
    broker_factory: Callable[..., DevBroker], topic_prefix: str, tmp_path: Path
) -> None:
    n = 2_000
    broker = broker_factory()
    with (
        SimulatedLMServer(latency=0.01) as sim,
        pipeline_of(broker.bootstrap, topic_prefix, tmp_path / "stack") as pipeline,
    ):
        pipeline.start("aggregate")
        pipeline.start("score")
        pipeline.start("predict", "--allow-api-base", sim.base_url)
        pipeline.start("predict", "--allow-api-base", sim.base_url)
        pipeline.wait_ready()
        pids = {worker.name: worker.pid for worker in pipeline.stack.workers}

        job_id = pipeline.submit(devset(n, seed=51), sim_lm(sim.base_url))
        sim.control.wait_until(lambda stats: stats["completions_ok"] >= n // 4, timeout=120)
        broker.stop()
        broker.start()

        status, _ = pipeline.finish(job_id, timeout=150)
        assert_exact(pipeline, job_id, status, n)
        pipeline.stack.check_running()
        assert {worker.name: worker.pid for worker in pipeline.stack.workers} == pids
