"""Each demo optimizer through Kafka gives what it gives locally, and its teacher runs use the cluster.

On the shared pipeline (1 aggregator, 1 scorer, 3 predictors) plus one `dspex worker optimize`,
each test runs an optimizer locally with a LocalExecutor (the reference) and then through
``Client.optimize``, against its own deterministic simulated LM with every cache off: the same best
program, the same trial history, a validation score above the zero-shot program's.

Teacher runs (``KafkaExecutor.run``, i.e. ``Client.apredict``) are checked twice: directly, against
a LocalExecutor's runs (outputs, traces, rollouts), and inside an optimization, where every LM call
the simulated LM saw is accounted for by the predictions of the optimization's own jobs, so the
optimize worker made none itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from e2e_pipeline import (
    JOB_TIMEOUT_S,
    METRIC,
    Pipeline,
    cot_program,
    devset,
    local_evaluate,
    predict_program,
    read_topic,
    sim_lm,
    wait_for,
    wait_quiet,
)

from dspex.client import Client
from dspex.configuration import context
from dspex.errors import ConfigurationError, KafkaError
from dspex.lm import LM
from dspex.optimizers import (
    BootstrapFewShot,
    KafkaExecutor,
    LabeledFewShot,
    LocalExecutor,
    Optimizer,
)
from dspex.optimizers.labeled import labeled_program
from dspex.primitives import Example, Module, Prediction
from dspex.schemas import (
    SCORE_SOURCE_PREDICTOR,
    EvalJob,
    JobMessage,
    OptimizeStatus,
    PredictionRecord,
    ScoreRecord,
    TrialRecord,
    decode,
    is_usage_report,
)
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SEED = 5
TRAIN, VAL = devset(12, seed=31), devset(20, seed=32)
READY_S = 150.0

# name -> (cluster knobs, the same optimizer built locally, extra compile arguments locally)
CASES: dict[str, tuple[dict[str, Any], Callable[[], Optimizer], dict[str, Any]]] = {
    "labeled": ({"k": 4}, lambda: LabeledFewShot(k=4), {"metric": METRIC}),
    "bootstrap": (
        {"max_bootstrapped_demos": 2, "max_labeled_demos": 4},
        lambda: BootstrapFewShot(metric=METRIC, max_bootstrapped_demos=2, max_labeled_demos=4),
        {},
    ),
}


@pytest.fixture(scope="module")
def optimize_worker(_shared: Pipeline) -> Pipeline:
    """The shared pipeline with one optimize worker owning every jobs partition (left running:
    the session's pipeline stops it with the others)."""
    if not _shared.stack.alive("optimize"):
        _shared.start("optimize")
    jobs = _shared.partitions("jobs")
    wait_for(
        lambda: sum(_shared.assigned("optimize").values()) == jobs,
        READY_S,
        "the optimize worker to own every jobs partition",
        poll=0.5,
        detail=_shared.report,
        tolerate=(KafkaError,),
    )
    return _shared


# --------------------------------------------------------------------------- teacher runs


def _teacher_programs(teacher: Module, examples: Sequence[Example]) -> list[Module]:
    """One program per example: the teacher without that example among its demos (as bootstrapping
    does), the shared teacher for the others."""
    programs: list[Module] = []
    for example in examples:
        if any(example in p.demos for p in teacher.predictors()):
            copy = teacher.deepcopy()
            for predictor in copy.predictors():
                predictor.demos = [demo for demo in predictor.demos if demo != example]
            programs.append(copy)
        else:
            programs.append(teacher)
    return programs


def _runs(
    executor_of: Callable[[Client | None], Any],
    programs: Sequence[Module],
    examples: Sequence[Example],
    lm: LM,
    pipeline: Pipeline,
    rollout_id: int | None,
) -> list[Prediction | Exception]:
    async def go() -> list[Prediction | Exception]:
        async with Client(pipeline.bootstrap, prefix=pipeline.prefix) as client:
            executor = executor_of(client)
            return list(await executor.run(programs, examples, rollout_id=rollout_id, lm=lm))

    return asyncio.run(go())


def _shape(outcome: Prediction | Exception) -> Any:
    """What a run gave, comparably: outputs and (path, inputs, outputs) of every trace step."""
    if isinstance(outcome, Exception):
        return ("error", type(outcome).__name__, str(outcome))
    steps = [(s.predictor_path, s.inputs, s.outputs) for s in outcome.trace]
    return (outcome.to_dict(), steps, outcome.usage.lm_calls)


def test_teacher_runs_through_the_cluster_equal_local_runs(
    shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    examples = devset(8, seed=41)
    teacher = labeled_program(cot_program(), examples, 3)  # 3 examples get a teacher of their own
    programs = _teacher_programs(teacher, examples)
    assert len({id(p) for p in programs}) == 4

    def local(client: Client | None) -> LocalExecutor:
        return LocalExecutor()

    def remote(client: Client | None) -> KafkaExecutor:
        return KafkaExecutor(client, timeout=JOB_TIMEOUT_S)

    plain: list[Any] = []
    for rollout_id in (None, 1):
        before = sim.control.stats()["requests_total"]
        expected = _runs(local, programs, examples, lm, shared_pipeline, rollout_id)
        local_calls = sim.control.stats()["requests_total"] - before
        got = _runs(remote, programs, examples, lm, shared_pipeline, rollout_id)
        remote_calls = wait_quiet(sim)["requests_total"] - before - local_calls
        assert [_shape(o) for o in got] == [_shape(o) for o in expected], f"rollout {rollout_id}"
        assert remote_calls == local_calls == sum(_shape(o)[2] for o in expected)
        for program, outcome in zip(programs, got, strict=True):
            assert isinstance(outcome, Prediction)
            assert outcome.trace, "a remote run keeps its trace"
            mine = dict(program.named_predictors())
            for step in outcome.trace:
                if rollout_id is None:  # the steps name the caller's own predictors, as locally
                    assert step.predictor is mine[step.predictor_path]
                else:  # a rollout's copy, whose predictors send its seed, as locally
                    assert step.predictor.config["rollout_id"] == rollout_id
        if rollout_id is None:
            plain = [_shape(o) for o in got]
    # the rollout reached the predictors: its draws differ from the plain runs' somewhere
    assert [_shape(o) for o in got] != plain


# --------------------------------------------------------------------------- optimizers


def _local(name: str, lm: LM) -> tuple[str, list[TrialRecord]]:
    _, build, extra = CASES[name]

    async def go() -> tuple[str, list[TrialRecord]]:
        optimizer = build()
        with context(lm=lm):
            best = await optimizer.acompile(
                predict_program(), trainset=TRAIN, valset=VAL, executor=LocalExecutor(), **extra
            )
        assert optimizer.history is not None
        trials = [TrialRecord(**t.as_trial_record()) for t in optimizer.history.trials]
        return candidate_id(best), trials

    return asyncio.run(go())


def _optimize(pipeline: Pipeline, name: str, lm: LM) -> tuple[Module, OptimizeStatus]:
    label = f"each-{name}-{uuid.uuid4().hex[:8]}"
    with context(lm=lm):
        best = pipeline.client.optimize(
            predict_program(), TRAIN, VAL, METRIC, optimizer=name, knobs=CASES[name][0], seed=SEED,
            name=label, timeout=JOB_TIMEOUT_S,
        )  # fmt: skip
    assert isinstance(best, Module)
    [status] = [
        s for s in pipeline.client.jobs().values() if isinstance(s, OptimizeStatus) and s.name == label
    ]
    return best, cast(OptimizeStatus, status)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_optimizer_through_kafka_equals_local_and_beats_zero_shot(
    name: str,
    shared_pipeline: Pipeline,
    optimize_worker: Pipeline,
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    zero_shot = local_evaluate(predict_program(), VAL, lm).score
    best_id, trials = _local(name, lm)

    best, status = _optimize(shared_pipeline, name, lm)
    assert (status.state, status.best_candidate_id, candidate_id(best)) == ("completed", best_id, best_id)
    assert status.steps == trials  # the same trials and scores, step by step
    assert status.best_score is not None and status.best_score > zero_shot, (status.best_score, zero_shot)


def test_bootstrap_teacher_runs_went_through_the_predictors(
    shared_pipeline: Pipeline,
    optimize_worker: Pipeline,
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    before = sim.control.stats()["requests_total"]
    _, status = _optimize(shared_pipeline, "bootstrap", lm)
    spent = wait_quiet(sim)["requests_total"] - before

    records = read_topic(shared_pipeline.settings, _topic(shared_pipeline, "jobs"))
    jobs = [decode(m.value(), JobMessage) for m in records if m.value() is not None]
    mine = {j.job_id: j for j in jobs if isinstance(j, EvalJob) and j.parent_job_id == status.job_id}
    runs = {job_id for job_id, job in mine.items() if (job.name or "").startswith("runs")}
    assert runs and len(mine) > len(runs), "teacher-run jobs and the validation job, all the optimization's"
    predictions: list[PredictionRecord | ScoreRecord] = [
        decode(m.value(), PredictionRecord)
        for m in read_topic(shared_pipeline.settings, _topic(shared_pipeline, "predictions"))
        if m.value() is not None
    ]
    # a job with a built-in metric: the predictors wrote its scores instead of its predictions
    predictions += [
        score
        for m in read_topic(shared_pipeline.settings, _topic(shared_pipeline, "scores"))
        if m.value() is not None and not is_usage_report(m.value())
        for score in [decode(m.value(), ScoreRecord)]
        if score.source == SCORE_SOURCE_PREDICTOR
    ]
    ours = [p for p in predictions if p.job_id in mine]
    teacher = [p for p in ours if p.job_id in runs]
    assert teacher and all(p.trace for p in teacher if p.outputs is not None)
    # every request the simulated LM answered was a predictor's, for one of the optimization's jobs
    assert spent == sum(p.usage.lm_calls for p in ours) > 0
    assert status.usage.lm_calls == spent  # and the optimization charged exactly those


def _topic(pipeline: Pipeline, role: str) -> str:
    return pipeline.registry.name(role)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize("name", ["knn", "Ensemble"])
def test_optimizers_without_a_step_by_step_run_are_refused_before_submission(
    name: str, shared_pipeline: Pipeline, sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    sim = sim_factory(latency=0.01)
    with (
        context(lm=sim_lm(sim, cache_dir)),
        pytest.raises(ConfigurationError, match="cannot run as a cluster"),
    ):
        shared_pipeline.client.optimize(predict_program(), TRAIN, VAL, METRIC, optimizer=name, timeout=30)
    assert sim.control.stats()["requests_total"] == 0
