"""A SIMBA cluster optimization (`dspex worker optimize`, ``optimizer="simba"``) gives what SIMBA gives
locally for the same seed: the same sampled runs (on the cluster's predictors), the same rules (written
by the optimize worker with the job's LM), the same trials and best program, a checkpoint per step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from e2e_pipeline import (
    JOB_TIMEOUT_S,
    METRIC,
    Pipeline,
    devset,
    predict_program,
    read_topic,
    sim_lm,
    wait_for,
)

from dspex.errors import KafkaError
from dspex.lm import LM
from dspex.optimizers import LocalExecutor, optimizer_from_name
from dspex.primitives import Module
from dspex.schemas import OptimizerCheckpoint, OptimizeStatus, TrialRecord, decode
from dspex.serialization import candidate_id
from dspex.settings import context
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

KNOBS: dict[str, Any] = {"bsize": 6, "num_candidates": 3, "max_steps": 2}
SEED = 4
TRAIN, VAL = devset(12, seed=41), devset(20, seed=42)
READY_S = 120.0


@dataclass
class LocalRun:
    """The reference: best program, trials and LM requests per step of the same optimization here."""

    best_id: str
    trials: list[TrialRecord]
    calls_per_step: list[int]


def local_reference(sim: SimulatedLMServer, lm: LM) -> LocalRun:
    async def go() -> LocalRun:
        optimizer = optimizer_from_name("simba", metric=METRIC, seed=SEED, **KNOBS)
        calls: list[int] = []
        # no prompt_model: rules come from the context LM, as from the job's LM in the cluster
        with context(lm=lm):
            run = optimizer.start(predict_program(), trainset=TRAIN, valset=VAL, executor=LocalExecutor())
            while not run.done:
                before = sim.control.stats()["requests_total"]
                await run.step()
                calls.append(sim.control.stats()["requests_total"] - before)
            best = run.result()
        trials = [TrialRecord(**trial.as_trial_record()) for trial in run.history.trials]
        return LocalRun(candidate_id(best), trials, calls)

    return asyncio.run(go())


def start_cluster(pipeline: Pipeline) -> None:
    pipeline.start_workers(1)
    pipeline.start("optimize")
    wait_for(lambda: _ready(pipeline), READY_S, "the pipeline to be ready", poll=0.5, detail=pipeline.report)
    jobs = pipeline.partitions("jobs")
    wait_for(lambda: _owned(pipeline) == jobs, READY_S, "the optimize worker to own the jobs", poll=0.25)


def _ready(pipeline: Pipeline) -> bool:
    try:
        pipeline.wait_ready(READY_S)
    except KafkaError:
        return False
    return True


def _owned(pipeline: Pipeline) -> int:
    try:
        return sum(pipeline.assigned("optimize").values())
    except KafkaError:
        return -1


def checkpoint_steps(pipeline: Pipeline, job_id: str) -> list[int]:
    topic = pipeline.registry.name("optimizer-state")
    saved = [decode(m.value(), OptimizerCheckpoint) for m in read_topic(pipeline.settings, topic)]
    return [c.step for c in saved if c.job_id == job_id]


def test_simba_cluster_optimization_equals_local(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_reference(sim, lm)
    kinds = [t.kind for t in reference.trials]
    assert kinds.count("sample") == 2 and kinds.count("full") >= 2 and len(reference.calls_per_step) == 5
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    with context(lm=lm):
        best = pipeline.client.optimize(
            predict_program(), TRAIN, VAL, METRIC, optimizer="simba", knobs=KNOBS, seed=SEED,
            timeout=JOB_TIMEOUT_S,
        )  # fmt: skip
    assert isinstance(best, Module) and candidate_id(best) == reference.best_id
    job_ids = [s.job_id for s in pipeline.client.jobs().values() if isinstance(s, OptimizeStatus)]
    status = cast(OptimizeStatus, pipeline.client.status(job_ids[0]))
    assert (status.state, status.best_candidate_id) == ("completed", reference.best_id), status.reason
    assert status.steps == reference.trials  # the same runs, rules, candidates and scores, step by step
    assert checkpoint_steps(pipeline, status.job_id) == [1, 2, 3, 4, 5]  # sample, score, x2, choose


def test_simba_optimize_worker_killed_mid_step_resumes(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_reference(sim, lm)
    pipeline = pipeline_factory()
    start_cluster(pipeline)
    first = pipeline.stack.alive("optimize")[0]

    before = sim.control.stats()["requests_total"]
    sim.control.hold(
        after=reference.calls_per_step[0]
    )  # step 1's runs and rules go through; its scoring waits
    with context(lm=lm):
        job_id = cast(
            str,
            pipeline.client.optimize(
                predict_program(), TRAIN, VAL, METRIC, optimizer="simba", knobs=KNOBS, seed=SEED, wait=False
            ),
        )
    wait_for(
        lambda: sim.control.stats()["held"] > 0 and checkpoint_steps(pipeline, job_id),
        JOB_TIMEOUT_S,
        "the first step's checkpoint while the candidates' scoring is held",
        poll=0.25,
        detail=pipeline.report,
    )
    assert checkpoint_steps(pipeline, job_id) == [1]
    first.kill()
    sim.control.release()
    pipeline.start("optimize")

    status = cast(OptimizeStatus, pipeline.client.wait(job_id, timeout=JOB_TIMEOUT_S))
    assert (status.state, status.best_candidate_id) == ("completed", reference.best_id), status.reason
    assert status.steps == reference.trials  # no run or rule made twice, none missing
    assert checkpoint_steps(pipeline, job_id) == [1, 2, 3, 4, 5]
    spent = sim.control.stats()["requests_total"] - before
    # at most one full run plus the scoring that was in progress when the worker died
    total = sum(reference.calls_per_step)
    assert total <= spent <= total + reference.calls_per_step[1], (spent, reference)
