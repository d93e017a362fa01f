"""A COPRO cluster optimization (`dspex worker optimize`, ``optimizer="copro"``) gives what COPRO gives
locally for the same seed: the same proposals (made by the optimize worker with the job's LM), the same
trials and the same best program, with a checkpoint after every step."""

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
    "copro",
    knobs={"breadth": 3, "depth": 2},
    seed=5,
    train=devset(12, seed=21),
    val=devset(20, seed=22),
)


def test_copro_cluster_optimization_equals_local(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm, CASE)
    assert len(reference.calls_per_step) == 4 and any(t.kind == "proposal" for t in reference.trials)
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    status = optimize_like_local(pipeline, lm, CASE, reference)
    assert checkpoint_steps(pipeline, status.job_id) == [1, 2, 3, 4]


def test_copro_optimize_worker_killed_mid_evaluation_resumes(
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
        hold_after=reference.calls_per_step[0],  # round 1's proposals go through, its evaluation waits
        step=1,
        what="the proposals' checkpoint while the evaluation is held",
    )
    assert crash.steps_at_kill == [1]

    resumed_like_local(pipeline, crash, reference)
    assert checkpoint_steps(pipeline, crash.job_id) == [1, 2, 3, 4]
    spent = crash.spent(sim)
    # at most one full run plus the evaluation that was in progress when the worker died
    total = reference.calls
    assert total <= spent <= total + reference.calls_per_step[1], (spent, reference)
