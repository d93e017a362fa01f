"""Cluster optimizations: `dspex worker optimize` gives what the optimizer gives locally, and resumes.

Both tests run BootstrapFewShotWithRandomSearch (4 candidates: zero-shot, labeled, two bootstrapped)
on 20 train / 30 validation examples of the simulated LM's task, first locally with a LocalExecutor
(the reference: best program, trial history, LM requests per step), then through Kafka: one
aggregator, scorer and predictor, and the optimize worker(s), against the same deterministic
simulated LM with every cache off.

Crash and resume is event-driven: the simulated LM holds requests once step 0's are through, so the
worker is stuck inside step 1 when its step-0 checkpoint is on the optimizer-state topic; it is then
killed with SIGKILL and a new optimize worker takes the job over from that checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e_optimize import (
    BOOTSTRAP_RS_CASE,
    checkpoint_steps,
    kill_after_checkpoint,
    local_run,
    optimize_like_local,
    resumed_like_local,
    start_cluster,
)
from e2e_pipeline import Pipeline, sim_lm

from dspex.schemas import TrialRecord
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CASE = BOOTSTRAP_RS_CASE


def zero_shot_score(trials: list[TrialRecord]) -> float:
    return next(t.score for t in trials if t.note and "zero-shot" in t.note and t.score is not None)


def test_cluster_optimization_equals_local(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm, CASE)
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    status = optimize_like_local(pipeline, lm, CASE, reference)
    assert status.best_score is not None and status.best_score > zero_shot_score(status.steps)
    assert checkpoint_steps(pipeline, status.job_id) == [1, 2, 3]
    # the optimize worker's /metrics counted the steps and dropped the job's series when it ended
    worker = pipeline.heartbeats()[pipeline.stack.alive("optimize")[0].name]
    exposed = httpx.get(str(worker.metrics_url), timeout=10).text
    assert 'dspex_optimizer_steps_total{optimizer="bootstrap-rs"} 3.0' in exposed
    assert f'dspex_job="{status.job_id}"' not in exposed


def test_optimize_worker_killed_resumes_from_its_checkpoint(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm, CASE)
    assert len(reference.calls_per_step) == 3, reference.calls_per_step  # two bootstrap waves, one evaluation
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    crash = kill_after_checkpoint(
        pipeline, sim, lm, CASE,
        hold_after=reference.calls_per_step[0],  # step 0 goes through, step 1 waits
        step=1,
        what="the step-0 checkpoint while step 1 is held",
    )  # fmt: skip
    assert crash.steps_at_kill == [1]

    resumed_like_local(pipeline, crash, reference)
    assert checkpoint_steps(pipeline, crash.job_id) == [1, 2, 3]
    spent = crash.spent(sim)
    # at most one full run plus the step that was in progress when the worker died
    assert reference.calls <= spent <= reference.calls + reference.calls_per_step[1], (spent, reference)
