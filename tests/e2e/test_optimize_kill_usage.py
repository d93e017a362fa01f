"""Cost truth for an optimize worker killed mid-step: what its unfinished step had spent is reported.

A SIMBA step first runs ``num_candidates x bsize`` programs as one sub-job on the cluster's
predictors, then the optimize worker writes rules with its own LM calls. The simulated LM lets the
sub-job's requests and one rule request through and holds every request after them, so the worker
is stuck in its rule writing with the sub-job and one own call done, charged nowhere but in its
heartbeats. It is then killed with
SIGKILL; the next optimize worker resumes from no checkpoint and redoes the step. The job's final
``usage`` holds the second owner's calls only; ``usage_unreported`` must hold the dead step's, so
that ``usage + usage_unreported`` covers every answered request but those in flight at the kill.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_optimize import OptimizeCase, checkpoint_steps, requests_total, start_cluster, submit, wait_job
from e2e_pipeline import JOB_TIMEOUT_S, Pipeline, devset, sim_lm, wait_for

from dspex.processors.heartbeat import HEARTBEAT_INTERVAL_S
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CASE = OptimizeCase(
    "simba",
    knobs={"bsize": 6, "num_candidates": 3, "max_steps": 1},
    seed=4,
    train=devset(12, seed=41),
    val=devset(20, seed=42),
)
SAMPLE_RUNS = 3 * 6  # num_candidates x bsize programs run in the first step's one sub-job


def test_killed_mid_step_the_dead_steps_spending_is_reported_as_unreported(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    pipeline = pipeline_factory()
    start_cluster(pipeline)
    first = pipeline.stack.alive("optimize")[0]

    before = requests_total(sim)
    # the sampling sub-job goes through, then one rule request (the worker's own), the others wait
    sim.control.hold(after=SAMPLE_RUNS + 1)
    job_id = submit(pipeline, lm, CASE)
    wait_for(
        lambda: sim.control.stats()["held"] > 0,
        JOB_TIMEOUT_S,
        "the rule requests held after the sampling sub-job",
        poll=0.25,
        detail=pipeline.report,
    )
    time.sleep(2.5 * HEARTBEAT_INTERVAL_S)  # nothing moves now: a heartbeat lists the step's spending
    assert checkpoint_steps(pipeline, job_id) == []  # killed inside step 0: no checkpoint to resume
    in_flight = int(sim.control.stats()["held"])
    answered_before_kill = requests_total(sim) - before
    first.kill()
    sim.control.release()
    pipeline.start("optimize")

    status = wait_job(pipeline, job_id)
    assert status.state == "completed", status.reason
    spent = requests_total(sim) - before
    unreported = status.usage_unreported
    # Measured gap: the dead step's answered calls are redone and missing from usage ...
    assert answered_before_kill == SAMPLE_RUNS + 1
    assert status.usage.lm_calls < spent - in_flight, (status.usage, spent, in_flight)
    # ... and reported apart from it, named as such.
    assert unreported is not None, status
    assert unreported.lm_calls >= answered_before_kill, (unreported, answered_before_kill)
    assert status.usage.lm_calls + unreported.lm_calls >= spent - in_flight, (status.usage, unreported, spent)
    assert status.unreported_note is not None and "optimize worker died" in status.unreported_note
