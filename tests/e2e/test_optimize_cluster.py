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

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
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

KNOBS: dict[str, Any] = {"num_candidate_programs": 1, "max_bootstrapped_demos": 4}
SEED = 3
TRAIN, VAL = devset(20, seed=11), devset(30, seed=12)
READY_S = 120.0


@dataclass
class LocalRun:
    """The reference: what the optimizer does in this process with the same LM and seed."""

    best_id: str
    trials: list[TrialRecord]
    calls_per_step: list[int]

    @property
    def calls(self) -> int:
        return sum(self.calls_per_step)


def local_run(sim: SimulatedLMServer, lm: LM) -> LocalRun:
    async def go() -> LocalRun:
        optimizer = optimizer_from_name("bootstrap-rs", metric=METRIC, seed=SEED, **KNOBS)
        calls: list[int] = []
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
    wait_optimizer_owns_jobs(pipeline)


def _ready(pipeline: Pipeline) -> bool:
    # A freshly created topic may briefly have no leader for the heartbeat reader: ask again.
    try:
        pipeline.wait_ready(READY_S)
    except KafkaError as exc:
        logging.getLogger(__name__).info("pipeline not ready yet: %s", exc)
        return False
    return True


def wait_optimizer_owns_jobs(pipeline: Pipeline) -> None:
    jobs = pipeline.partitions("jobs")
    wait_for(
        lambda: _owned(pipeline) == jobs,
        READY_S,
        "a live optimize worker to own every jobs partition",
        poll=0.25,
        detail=pipeline.report,
    )


def _owned(pipeline: Pipeline) -> int:
    try:
        return sum(pipeline.assigned("optimize").values())
    except KafkaError:
        return -1


def checkpoints(pipeline: Pipeline, job_id: str) -> list[OptimizerCheckpoint]:
    topic = pipeline.registry.name("optimizer-state")
    found = [decode(m.value(), OptimizerCheckpoint) for m in read_topic(pipeline.settings, topic)]
    return [c for c in found if c.job_id == job_id]


def zero_shot_score(trials: list[TrialRecord]) -> float:
    return next(t.score for t in trials if t.note and "zero-shot" in t.note and t.score is not None)


def test_cluster_optimization_equals_local(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm)
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    with context(lm=lm):
        best = pipeline.client.optimize(
            predict_program(), TRAIN, VAL, METRIC, optimizer="bootstrap-rs", knobs=KNOBS, seed=SEED,
            timeout=JOB_TIMEOUT_S,
        )  # fmt: skip
    assert isinstance(best, Module)
    assert candidate_id(best) == reference.best_id
    job_ids = [s.job_id for s in pipeline.client.jobs().values() if isinstance(s, OptimizeStatus)]
    assert len(job_ids) == 1, job_ids
    status = cast(OptimizeStatus, pipeline.client.status(job_ids[0]))
    assert (status.state, status.best_candidate_id) == ("completed", reference.best_id)
    assert status.steps == reference.trials  # the same trials, scores and history, step by step
    assert status.best_score is not None and status.best_score > zero_shot_score(status.steps)
    assert [c.step for c in checkpoints(pipeline, status.job_id)] == [1, 2, 3]
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
    reference = local_run(sim, lm)
    assert len(reference.calls_per_step) == 3, reference.calls_per_step  # two bootstrap waves, one evaluation
    pipeline = pipeline_factory()
    start_cluster(pipeline)
    first = pipeline.stack.alive("optimize")[0]

    before = sim.control.stats()["requests_total"]
    sim.control.hold(after=reference.calls_per_step[0])  # step 0 goes through, step 1 waits
    with context(lm=lm):
        job_id = cast(
            str,
            pipeline.client.optimize(
                predict_program(), TRAIN, VAL, METRIC, optimizer="bootstrap-rs", knobs=KNOBS, seed=SEED,
                wait=False,
            ),
        )  # fmt: skip
    wait_for(
        lambda: sim.control.stats()["held"] > 0 and checkpoints(pipeline, job_id),
        JOB_TIMEOUT_S,
        "the step-0 checkpoint while step 1 is held",
        poll=0.25,
        detail=pipeline.report,
    )
    assert [c.step for c in checkpoints(pipeline, job_id)] == [1]
    first.kill()
    sim.control.release()
    pipeline.start("optimize")

    status = cast(OptimizeStatus, pipeline.client.wait(job_id, timeout=JOB_TIMEOUT_S))
    assert (status.state, status.best_candidate_id) == ("completed", reference.best_id), status.reason
    assert status.steps == reference.trials  # no gap, no repeated step: the history of an uninterrupted run
    assert [c.step for c in checkpoints(pipeline, job_id)] == [1, 2, 3]
    spent = sim.control.stats()["requests_total"] - before
    # at most one full run plus the step that was in progress when the worker died
    assert reference.calls <= spent <= reference.calls + reference.calls_per_step[1], (spent, reference)
