"""Cancelling a cluster optimization cancels the evaluations it is waiting for.

The simulated LM holds every request, so the optimization's first step (a bootstrap wave: teacher
runs as jobs of their own, each with the optimization as ``parent_job_id``) is stuck with its LM
requests held when the optimization is cancelled. The optimize worker abandons the step, and the
client it submits with cancels the step's jobs: they end ``cancelled`` and their held requests are
dropped by the predictor, so no LM request is answered after the cancel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_optimize import BOOTSTRAP_RS_CASE, job_status, start_cluster, submit
from e2e_pipeline import JOB_TIMEOUT_S, Pipeline, read_topic, sim_lm, sim_report, wait_for, wait_quiet

from dspex.schemas import EvalJob, JobMessage, JobStatus, decode
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CASE = BOOTSTRAP_RS_CASE


def child_jobs(pipeline: Pipeline, parent: str) -> list[str]:
    """The evaluation jobs the optimization ``parent`` submitted (from the jobs topic)."""
    messages = read_topic(pipeline.settings, pipeline.registry.name("jobs"))
    jobs = [decode(m.value(), JobMessage) for m in messages if m.value() is not None]
    return [j.job_id for j in jobs if isinstance(j, EvalJob) and j.parent_job_id == parent]


def test_cancelling_an_optimization_cancels_its_running_evaluations(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    sim.control.hold()  # every LM request from here waits until released or dropped
    job_id = submit(pipeline, lm, CASE)
    wait_for(
        lambda: sim.control.stats()["held"] > 0,
        JOB_TIMEOUT_S,
        "the optimization's first LM requests to be held",
        poll=0.25,
        detail=pipeline.report,
    )
    children = child_jobs(pipeline, job_id)
    assert children, "the optimization's step submitted no job of its own"

    pipeline.client.cancel(job_id, "changed my mind")
    final = pipeline.client.wait(job_id, timeout=JOB_TIMEOUT_S)
    assert final.state == "cancelled", final.reason

    def children_cancelled() -> bool:
        statuses = [pipeline.client.status(child) for child in children]
        return all(isinstance(s, JobStatus) and s.state == "cancelled" for s in statuses)

    wait_for(
        children_cancelled, JOB_TIMEOUT_S, "every job of the step to be cancelled", detail=pipeline.report
    )
    reasons = {pipeline.client.status(child).reason for child in children}
    assert all(reason and "caller stopped waiting" in reason for reason in reasons), reasons

    # The predictor drops the cancelled jobs' held requests: nothing is answered after the release.
    stopped = wait_quiet(sim)
    assert stopped["held"] == 0, f"LM requests still held after the cancel: {sim_report(sim)}"
    answered = stopped["completions_ok"]
    sim.control.release()
    pipeline.wait_drained()  # every task consumed: the cancelled jobs' tasks were skipped
    final_stats = wait_quiet(sim)
    assert final_stats["completions_ok"] == answered, "an LM answer after the cancel"
    assert job_status(pipeline, job_id).state == "cancelled"
