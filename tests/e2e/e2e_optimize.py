"""What the cluster-optimization e2e tests share: the local reference run, the cluster with an
optimize worker, submitting the job, reading its checkpoints and status, and the SIGKILL/restart.

Every test runs the same optimization twice against one deterministic simulated LM with caches
off: first here with a LocalExecutor (the reference), then through Kafka with `dspex worker
optimize`; the tests keep their own knobs, kill points and bounds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from e2e_pipeline import JOB_TIMEOUT_S, METRIC, Pipeline, devset, predict_program, read_topic, wait_for

from dspex.configuration import context
from dspex.errors import KafkaError
from dspex.lm import LM
from dspex.optimizers import LocalExecutor, optimizer_from_name
from dspex.primitives import Example, Module
from dspex.schemas import OptimizerCheckpoint, OptimizeStatus, TrialRecord, decode
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer

READY_S = 120.0


@dataclass(frozen=True)
class OptimizeCase:
    """One optimization: the registered optimizer, its JSON knobs, the seed, the data, the options
    of its compile and the student program."""

    optimizer: str
    knobs: dict[str, Any]
    seed: int
    train: list[Example]
    val: list[Example]
    compile_options: dict[str, Any] = field(default_factory=dict)
    program: Callable[[], Module] = predict_program


BOOTSTRAP_RS_CASE = OptimizeCase(
    "bootstrap-rs",
    knobs={"num_candidate_programs": 1, "max_bootstrapped_demos": 4},
    seed=3,
    train=devset(20, seed=11),
    val=devset(30, seed=12),
)
"""BootstrapFewShotWithRandomSearch with 4 candidates (zero-shot, labeled, two bootstrapped) on 20
train / 30 validation examples: three steps (two bootstrap waves, then one evaluation of all four)."""


@dataclass
class LocalRun:
    """The reference: best program, trials and LM requests per step of the same optimization here."""

    best_id: str
    trials: list[TrialRecord]
    calls_per_step: list[int]
    num_trials: int | None = None  # the run's planned trial count, for optimizers that have one

    @property
    def calls(self) -> int:
        return sum(self.calls_per_step)


def requests_total(sim: SimulatedLMServer) -> int:
    return int(sim.control.stats()["requests_total"])


def local_run(sim: SimulatedLMServer, lm: LM, case: OptimizeCase) -> LocalRun:
    """Step the optimization here, counting the simulated LM's requests between steps."""

    async def go() -> LocalRun:
        optimizer = optimizer_from_name(case.optimizer, metric=METRIC, seed=case.seed, **case.knobs)
        calls: list[int] = []
        # no prompt_model: proposals use the context LM, as they use the job's LM in the cluster
        with context(lm=lm):
            run = optimizer.start(
                case.program(), trainset=case.train, valset=case.val, executor=LocalExecutor(),
                **case.compile_options,
            )  # fmt: skip
            while not run.done:
                before = requests_total(sim)
                await run.step()
                calls.append(requests_total(sim) - before)
            best = run.result()
        trials = [TrialRecord(**trial.as_trial_record()) for trial in run.history.trials]
        return LocalRun(candidate_id(best), trials, calls, getattr(run, "num_trials", None))

    return asyncio.run(go())


# ---------------------------------------------------------------------------------- the cluster


def start_cluster(pipeline: Pipeline, *worker_args: str, ready_s: float = READY_S) -> None:
    """Aggregator, scorer, one predictor and the optimize worker, each owning its partitions;
    ``worker_args`` go to the predictor and the optimize worker (``--allow-module M``)."""
    pipeline.start_workers(1, *worker_args)
    pipeline.start("optimize", *worker_args)
    wait_for(
        lambda: _ready(pipeline, ready_s),
        ready_s,
        "the pipeline to be ready",
        poll=0.5,
        detail=pipeline.report,
    )
    wait_optimizer_owns_jobs(pipeline, ready_s)


def _ready(pipeline: Pipeline, ready_s: float) -> bool:
    try:
        pipeline.wait_ready(ready_s)
    except KafkaError as exc:  # a freshly created topic may briefly have no leader: ask again
        logging.getLogger(__name__).info("pipeline not ready yet: %s", exc)
        return False
    return True


def wait_optimizer_owns_jobs(pipeline: Pipeline, ready_s: float = READY_S) -> None:
    jobs = pipeline.partitions("jobs")
    wait_for(
        lambda: _owned(pipeline) == jobs,
        ready_s,
        "a live optimize worker to own every jobs partition",
        poll=0.25,
        detail=pipeline.report,
    )


def _owned(pipeline: Pipeline) -> int:
    try:
        return sum(pipeline.assigned("optimize").values())
    except KafkaError:
        return -1


# ---------------------------------------------------------------------------------- jobs


def optimize(pipeline: Pipeline, lm: LM, case: OptimizeCase) -> Module:
    """Run the optimization in the cluster and wait for its best program."""
    with context(lm=lm):
        best = pipeline.client.optimize(
            case.program(), case.train, case.val, METRIC, optimizer=case.optimizer, knobs=case.knobs,
            compile_options=case.compile_options, seed=case.seed, timeout=JOB_TIMEOUT_S,
        )  # fmt: skip
    return cast(Module, best)


def submit(pipeline: Pipeline, lm: LM, case: OptimizeCase, **options: Any) -> str:
    """Submit the optimization without waiting; returns its job id."""
    with context(lm=lm):
        job_id = pipeline.client.optimize(
            case.program(), case.train, case.val, METRIC, optimizer=case.optimizer, knobs=case.knobs,
            compile_options=case.compile_options, seed=case.seed, wait=False, **options,
        )  # fmt: skip
    return cast(str, job_id)


def optimize_job_ids(pipeline: Pipeline) -> list[str]:
    return [s.job_id for s in pipeline.client.jobs().values() if isinstance(s, OptimizeStatus)]


def job_status(pipeline: Pipeline, job_id: str) -> OptimizeStatus:
    return cast(OptimizeStatus, pipeline.client.status(job_id))


def wait_job(pipeline: Pipeline, job_id: str) -> OptimizeStatus:
    return cast(OptimizeStatus, pipeline.client.wait(job_id, timeout=JOB_TIMEOUT_S))


def checkpoints(pipeline: Pipeline, job_id: str) -> list[OptimizerCheckpoint]:
    topic = pipeline.registry.name("optimizer-state")
    found = [decode(m.value(), OptimizerCheckpoint) for m in read_topic(pipeline.settings, topic)]
    return [c for c in found if c.job_id == job_id]


def checkpoint_steps(pipeline: Pipeline, job_id: str) -> list[int]:
    return [c.step for c in checkpoints(pipeline, job_id)]


# ---------------------------------------------------------------------------------- crash and resume


@dataclass
class Crash:
    """A job whose optimize worker was SIGKILLed while the simulated LM held its next step."""

    job_id: str
    steps_at_kill: list[int]  # the checkpoints on the topic when the worker was killed
    requests_before: int  # the simulated LM's request count before the job was submitted

    def spent(self, sim: SimulatedLMServer) -> int:
        """LM requests since submission, by both workers together."""
        return requests_total(sim) - self.requests_before


def kill_after_checkpoint(
    pipeline: Pipeline,
    sim: SimulatedLMServer,
    lm: LM,
    case: OptimizeCase,
    *,
    hold_after: int,
    step: int,
    what: str,
) -> Crash:
    """Submit with the simulated LM holding every request after the first ``hold_after``; once
    requests are held and the checkpoint of ``step`` is on the topic, SIGKILL the optimize worker,
    release the LM and start a new worker that takes the job over from that checkpoint."""
    first = pipeline.stack.alive("optimize")[0]
    before = requests_total(sim)
    sim.control.hold(after=hold_after)
    job_id = submit(pipeline, lm, case)
    wait_for(
        lambda: sim.control.stats()["held"] > 0 and step in checkpoint_steps(pipeline, job_id),
        JOB_TIMEOUT_S,
        what,
        poll=0.25,
        detail=pipeline.report,
    )
    steps = checkpoint_steps(pipeline, job_id)
    first.kill()
    sim.control.release()
    pipeline.start("optimize")
    return Crash(job_id, steps, before)


# ---------------------------------------------------------------------------------- outcomes


def optimize_like_local(
    pipeline: Pipeline, lm: LM, case: OptimizeCase, reference: LocalRun
) -> OptimizeStatus:
    """Run the optimization in the cluster (its only job) and check it gave the local run's best
    program and trial history; returns the job's final status."""
    best = optimize(pipeline, lm, case)
    assert isinstance(best, Module) and candidate_id(best) == reference.best_id
    job_ids = optimize_job_ids(pipeline)
    assert len(job_ids) == 1, job_ids
    status = job_status(pipeline, job_ids[0])
    assert (status.state, status.best_candidate_id) == ("completed", reference.best_id), status.reason
    assert status.steps == reference.trials  # the same trials, scores and history, step by step
    return status


def resumed_like_local(pipeline: Pipeline, crash: Crash, reference: LocalRun) -> OptimizeStatus:
    """Wait for the crashed job and check the new worker finished it as the local run did."""
    status = wait_job(pipeline, crash.job_id)
    assert (status.state, status.best_candidate_id) == ("completed", reference.best_id), status.reason
    assert status.steps == reference.trials  # nothing made twice, nothing missing
    return status
