"""A SIMBA cluster optimization (`dspex worker optimize`, ``optimizer="simba"``) gives what SIMBA gives
locally for the same seed: the same sampled runs (on the cluster's predictors), the same rules (written
by the optimize worker with the job's LM), the same trials and best program, a checkpoint per step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_optimize import (
    OptimizeCase,
    checkpoint_steps,
    kill_after_checkpoint,
    local_run,
    optimize_like_local,
    resumed_like_local,
    start_cluster,
)
from e2e_pipeline import Pipeline, devset, sim_lm

from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CASE = OptimizeCase(
    "simba",
    knobs={"bsize": 6, "num_candidates": 3, "max_steps": 2},
    seed=4,
    train=devset(12, seed=41),
    val=devset(20, seed=42),
)


def test_simba_cluster_optimization_equals_local(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm, CASE)
    kinds = [t.kind for t in reference.trials]
    assert kinds.count("sample") == 2 and kinds.count("full") >= 2 and len(reference.calls_per_step) == 5
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    status = optimize_like_local(pipeline, lm, CASE, reference)
    assert checkpoint_steps(pipeline, status.job_id) == [1, 2, 3, 4, 5]  # sample, score, x2, choose


def test_simba_optimize_worker_killed_mid_step_resumes(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm, CASE)
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    crash = kill_after_checkpoint(
        pipeline,
        sim,
        lm,
        CASE,
        hold_after=reference.calls_per_step[0],  # step 1's runs and rules go through; its scoring waits
        step=1,
        what="the first step's checkpoint while the candidates' scoring is held",
    )
    assert crash.steps_at_kill == [1]

    resumed_like_local(pipeline, crash, reference)
    assert checkpoint_steps(pipeline, crash.job_id) == [1, 2, 3, 4, 5]
    spent = crash.spent(sim)
    # at most one full run plus the scoring that was in progress when the worker died
    total = reference.calls
    assert total <= spent <= total + reference.calls_per_step[1], (spent, reference)
