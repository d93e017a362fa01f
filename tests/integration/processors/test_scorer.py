"""The scorer worker against the real broker: exact_match scores, errors kept at the failure score,
import-path metrics only from allowed modules, and predictor + scorer agreeing with local Evaluate."""

from __future__ import annotations

from collections import Counter

import pytest
from workers_kafka import publish_candidate, publish_job, running, tails

import dspex
from dspex.processors.common import WorkerOptions
from dspex.processors.predictor import Predictor
from dspex.processors.scorer import Scorer
from dspex.processors.security import SecurityPolicy
from dspex.schemas import (
    DeadLetter,
    ErrorInfo,
    EvalJob,
    LMSpec,
    MetricSpec,
    PredictionRecord,
    ScoreRecord,
    Task,
)
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry
from dspex.testing import SimulatedLMServer, arithmetic_dataset, arithmetic_rows

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def options(registry: TopicRegistry, **changes: object) -> WorkerOptions:
    base: dict[str, object] = {"prefix": registry.prefix, "fast_groups": True, "metrics": False}
    return WorkerOptions(**{**base, **changes})  # type: ignore[arg-type]


def prediction(job_id: str, index: int, example: dict, **fields: object) -> PredictionRecord:
    task = Task.build(
        job_id=job_id, candidate_id="c1", example_index=index, example=example, input_keys=["question"]
    )
    return PredictionRecord(
        task_id=task.task_id, job_id=job_id, candidate_id="c1", example_index=index, example=example,
        worker_id="test", **fields,
    )  # fmt: skip


async def publish(producer: AsyncProducer, registry: TopicRegistry, role: str, *models: object) -> None:
    for model in models:
        await producer.produce_record(registry.name(role), to_record(model, role=role))  # type: ignore[arg-type]


async def test_scores_exact_match_and_keeps_errors_at_the_failure_score(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(40, seed=11)
    job = EvalJob(job_id="job-s", candidate_ids=["c1"], metric=MetricSpec(name="exact_match:answer"),
                  num_examples=len(rows) + 2, failure_score=0.5)  # fmt: skip
    right = [
        prediction("job-s", i, row, outputs={"answer": row["answer"]}) for i, row in enumerate(rows[:20])
    ]
    wrong = [
        prediction("job-s", i + 20, row, outputs={"answer": "x" + row["answer"]})
        for i, row in enumerate(rows[20:])
    ]
    systemic = ErrorInfo(type="LMAuthenticationError", message="bad key", status=401, systemic=True)
    failed = prediction("job-s", 40, rows[0], error=systemic)
    no_field = prediction("job-s", 41, rows[1], outputs={"reply": "4"})  # exact_match:answer raises on it
    async with AsyncProducer(settings) as producer, tails(settings, registry, "scores") as (scores,):
        await publish(producer, registry, "jobs", job)
        await publish(producer, registry, "predictions", *right, *wrong, failed, no_field)
        async with running(Scorer(settings, options(registry))):
            await scores.count(42)

    by_index = {s.example_index: s for s in scores.decoded(ScoreRecord)}
    assert len(scores.messages) == 42
    assert [by_index[i].score for i in range(40)] == [1.0] * 20 + [0.0] * 20
    assert all(by_index[i].error is None and by_index[i].source == "scorer" for i in range(40))
    assert by_index[3].outputs == {"answer": rows[3]["answer"]} and by_index[3].example == rows[3]
    assert (by_index[40].score, by_index[40].error) == (0.5, systemic)
    assert by_index[41].score == 0.5 and by_index[41].error is not None
    assert by_index[41].error.type == "MetricError" and not by_index[41].error.systemic
    assert {s.job_id for s in by_index.values()} == {"job-s"}


async def test_import_path_metrics_only_from_allowed_modules(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    row = {"question": "What is 2 + 2?", "answer": "4"}
    allowed = EvalJob(job_id="job-allowed", candidate_ids=["c1"], num_examples=2,
                      metric=MetricSpec(name="workers_kafka:length_metric", kind="import"))  # fmt: skip
    refused = EvalJob(job_id="job-refused", candidate_ids=["c1"], num_examples=1,
                      metric=MetricSpec(name="os.path:exists", kind="import"))  # fmt: skip
    unknown = EvalJob(job_id="job-unknown", candidate_ids=["c1"], num_examples=1,
                      metric=MetricSpec(name="nope:answer"))  # fmt: skip
    worker = Scorer(settings, options(registry, policy=SecurityPolicy(allow_modules=["workers_kafka"])))
    async with (
        AsyncProducer(settings) as producer,
        tails(settings, registry, "scores", "dlq") as (scores, dlq),
    ):
        await publish(producer, registry, "jobs", allowed, refused, unknown)
        await publish(
            producer, registry, "predictions",
            prediction("job-allowed", 0, row, outputs={"answer": "4"}),
            prediction("job-allowed", 1, row, outputs={"answer": "42"}),
            prediction("job-refused", 0, row, outputs={"answer": "4"}),
            prediction("job-unknown", 0, row, outputs={"answer": "4"}),
        )  # fmt: skip
        async with running(worker):
            await scores.count(4)
            await dlq.count(2)

    results = {(s.job_id, s.example_index): s for s in scores.decoded(ScoreRecord)}
    assert results[("job-allowed", 0)].score == 1.0 and results[("job-allowed", 1)].score == 0.0
    assert Counter(letter.reason for letter in dlq.decoded(DeadLetter)) == {
        "security_policy": 1,
        "unknown_metric": 1,
    }
    for job_id in ("job-refused", "job-unknown"):
        accounted = results[(job_id, 0)]
        assert accounted.source == "dlq" and accounted.error is not None and accounted.error.systemic


async def test_predictor_and_scorer_give_local_evaluates_scores(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    devset = arithmetic_dataset(80, seed=13)
    program = dspex.Predict("question -> answer")
    with SimulatedLMServer(in_process=True) as sim:
        local_lm = dspex.LM("openai/simulated", api_base=sim.base_url, cache=False)
        local = await dspex.Evaluate(devset=devset, metric="exact_match:answer", concurrency=16).acall(
            dspex.Predict("question -> answer", lm=local_lm)
        )
        lm = LMSpec(model="openai/simulated", api_base=sim.base_url, cache=False)
        async with AsyncProducer(settings) as producer, tails(settings, registry, "scores") as (scores,):
            cid = await publish_candidate(producer, registry, program)
            rows = [example.to_dict() for example in devset]
            await publish_job(producer, registry, job_id="job-eq", candidate_ids=[cid], rows=rows, lm=lm)
            async with (
                running(Predictor(settings, options(registry))),
                running(Scorer(settings, options(registry))),
            ):
                await scores.count(len(devset))
        calls = sim.control.stats()["completions_ok"]

    distributed = {s.example_index: s for s in scores.decoded(ScoreRecord)}
    assert [distributed[i].score for i in range(len(devset))] == [r.score for r in local.records]
    assert [distributed[i].outputs for i in range(len(devset))] == [
        r.prediction.to_dict() if r.prediction else None for r in local.records
    ]
    assert 0 < sum(r.score for r in local.records) < len(devset), "the sim gets some right and some wrong"
    assert calls == 2 * len(devset), "no cache: the LM answered every example, locally and in the pipeline"
