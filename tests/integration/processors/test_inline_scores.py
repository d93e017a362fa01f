"""Built-in metrics scored by the predictor against the real broker: scores straight to the scores
topic (source "predictor") and nothing on the predictions topic, errors and raising metrics at the
failure score; imported metrics, and every metric with --no-inline-builtin-metrics, still go through
the scorer."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from workers_kafka import Tail, publish_candidate, publish_job, running, tails

import dspex
from dspex.processors.common import WorkerOptions
from dspex.processors.predictor import DEADLINE_ERROR, Predictor
from dspex.processors.scorer import Scorer
from dspex.processors.security import SecurityPolicy
from dspex.schemas import LMSpec, PredictionRecord, ScoreRecord, Task
from dspex.schemas.base import utc_now
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry
from dspex.testing import SimulatedLMServer, arithmetic_rows

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

SCORER_POLICY = SecurityPolicy(allow_modules=["workers_kafka"])


def options(registry: TopicRegistry, **changes: object) -> WorkerOptions:
    base: dict[str, object] = {"prefix": registry.prefix, "fast_groups": True, "metrics": False}
    return WorkerOptions(**{**base, **changes})  # type: ignore[arg-type]


def sim_lm(base_url: str) -> LMSpec:
    return LMSpec(model="openai/simulated", api_base=base_url, cache=False)


async def nothing_more(tail: Tail) -> list[object]:
    """What ``tail``'s topic holds after a few more polls (the workers are done by then)."""
    for _ in range(3):
        await asyncio.to_thread(tail._poll)
    return list(tail.messages)


async def test_a_builtin_metric_is_scored_by_the_predictor_and_skips_the_predictions_topic(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(30, seed=21)
    predictor = Predictor(settings, options(registry, worker_id="predict-inline"))
    with SimulatedLMServer(in_process=True) as sim:
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions", "scores") as (predictions, scores),
        ):
            answers = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            replies = await publish_candidate(producer, registry, dspex.Predict("question -> reply"))
            lm = sim_lm(sim.base_url)
            published = await publish_job(
                producer, registry, job_id="job-inline", candidate_ids=[answers, replies], rows=rows,
                lm=lm, failure_score=0.5,
            )  # fmt: skip
            late = Task.build(
                job_id="job-inline", candidate_id=answers, example_index=len(rows), example=rows[0],
                input_keys=["question"], lm=lm, deadline=utc_now() - timedelta(minutes=1),
            )  # fmt: skip
            await producer.produce_record(registry.name("tasks"), to_record(late, role="tasks"))
            async with running(predictor), running(Scorer(settings, options(registry, policy=SCORER_POLICY))):
                await scores.count(len(published.tasks) + 1)
                left = await nothing_more(predictions)
        stats = sim.control.stats()

    assert left == [], "a job with a built-in metric writes nothing to the predictions topic"
    results = scores.decoded(ScoreRecord)
    assert len(results) == 2 * len(rows) + 1
    assert {(s.source, s.worker_id, s.predicted_by) for s in results} == {
        ("predictor", "predict-inline", "predict-inline")
    }
    by_key = {(s.candidate_id, s.example_index): s for s in results}
    right = [by_key[(answers, i)] for i in range(len(rows))]
    assert all(s.error is None and s.outputs is not None and s.usage.lm_calls == 1 for s in right)
    assert all(s.attempt_id and s.example == rows[s.example_index] for s in right)
    assert [s.score for s in right] == [
        float(s.outputs["answer"] == s.example["answer"]) for s in right if s.outputs
    ]
    assert 0 < sum(s.score for s in right) < len(rows), "the sim gets some right and some wrong"
    # a metric that raises (no answer field) and an expired task: the failure score, with the error
    raised = [by_key[(replies, i)] for i in range(len(rows))]
    assert all(s.score == 0.5 and s.error is not None for s in raised)
    assert {(s.error.type, s.error.systemic) for s in raised if s.error} == {("MetricError", False)}
    expired = by_key[(answers, len(rows))]
    assert expired.score == 0.5 and expired.error is not None and expired.error.type == DEADLINE_ERROR
    assert stats["completions_ok"] == 2 * len(rows)


async def test_imported_metrics_and_inline_turned_off_go_through_the_scorer(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(12, seed=23)

    def scorer() -> Scorer:
        return Scorer(settings, options(registry, policy=SCORER_POLICY, worker_id="score-x"))

    with SimulatedLMServer(in_process=True) as sim:
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions", "scores") as (predictions, scores),
        ):
            cid = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            lm = sim_lm(sim.base_url)
            await publish_job(
                producer, registry, job_id="job-imported", candidate_ids=[cid], rows=rows, lm=lm,
                metric="workers_kafka:length_metric", metric_kind="import",
            )  # fmt: skip
            async with running(Predictor(settings, options(registry))), running(scorer()):
                await scores.count(len(rows))
            # the same predictor told not to: a built-in metric goes through the scorer too
            await publish_job(producer, registry, job_id="job-off", candidate_ids=[cid], rows=rows, lm=lm)
            predictor = Predictor(settings, options(registry, inline_builtin_metrics=False))
            async with running(predictor), running(scorer()):
                await scores.count(2 * len(rows))
                await predictions.count(2 * len(rows))

    results = scores.decoded(ScoreRecord)
    assert len(results) == 2 * len(rows)
    assert {(s.source, s.worker_id) for s in results} == {("scorer", "score-x")}
    assert {s.job_id for s in results} == {"job-imported", "job-off"}
    imported = [s for s in results if s.job_id == "job-imported"]
    assert all(s.score == float(len(str(s.outputs["answer"])) == 1) for s in imported if s.outputs)
    written = predictions.decoded(PredictionRecord)
    assert sorted((p.job_id, p.example_index) for p in written) == sorted(
        (s.job_id, s.example_index) for s in results
    )
