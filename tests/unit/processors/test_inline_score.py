"""The scoring the scorer and the predictor share (dspex.processors.inline_score): the ScoreRecord a
prediction gives, failures at the job's failure score, and metrics built once, refused or unknown."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.errors import PoisonMessageError
from dspex.metrics import MetricResult
from dspex.processors.inline_score import MetricBook, MetricFn, score_prediction
from dspex.schemas import (
    SCORE_SOURCE_PREDICTOR,
    CallbackEvent,
    ErrorInfo,
    EvalJob,
    MetricSpec,
    PredictionRecord,
    TraceEntry,
    UsageRecord,
)

EXAMPLE = {"question": "What is 2 + 2?", "answer": "4"}


def job(metric: MetricSpec | None = None, failure_score: float = 0.25) -> EvalJob:
    return EvalJob(
        job_id="job-1",
        candidate_ids=["c1"],
        metric=metric or MetricSpec(name="exact_match:answer"),
        num_examples=3,
        failure_score=failure_score,
    )


def prediction(**fields: Any) -> PredictionRecord:
    base: dict[str, Any] = {
        "task_id": "t-1",
        "job_id": "job-1",
        "candidate_id": "c1",
        "example_index": 2,
        "example": EXAMPLE,
        "worker_id": "predict-7",
        "attempt_id": "attempt-9",
        "usage": UsageRecord(prompt_tokens=11, completion_tokens=3, cost_usd=0.002, lm_calls=1),
        "latency_s": 0.125,
        "trace": [TraceEntry(predictor="self", inputs={"question": "q"}, outputs={"answer": "4"})],
        "callback_events": [CallbackEvent(callback="pkg.mod:Seen", hook="on_lm_start", call_id="x")],
        "lm_calls_unlogged": 2,
    }
    return PredictionRecord(**{**base, **fields})


def never(_: EvalJob) -> MetricFn:
    raise AssertionError("the metric of an errored prediction is not built")


async def score(record: PredictionRecord, evaluation: EvalJob | None = None) -> Any:
    book = MetricBook(allow_modules=())
    return await score_prediction(
        record, evaluation or job(), book.of_job, source=SCORE_SOURCE_PREDICTOR, worker_id="predict-1"
    )


async def test_a_prediction_scores_its_metric_with_every_field_of_the_prediction() -> None:
    record = prediction(outputs={"answer": "4"})
    right, wrong = await score(record), await score(prediction(outputs={"answer": "5"}))
    assert (right.score, right.error, right.feedback, wrong.score) == (1.0, None, None, 0.0)
    assert (right.source, right.worker_id, right.predicted_by) == ("predictor", "predict-1", "predict-7")
    kept = ["job_id", "candidate_id", "example_index", "task_id", "outputs", "trace", "callback_events"]
    kept += ["tool_calls", "lm_call_log", "lm_calls_unlogged", "usage", "latency_s", "example", "attempt_id"]
    assert {name: getattr(right, name) for name in kept} == {name: getattr(record, name) for name in kept}


async def test_an_errored_prediction_scores_the_failure_score_with_its_error() -> None:
    systemic = ErrorInfo(type="LMAuthenticationError", message="bad key", status=401, systemic=True)
    record = prediction(error=systemic)
    scored = await score_prediction(record, job(), never, source="scorer", worker_id="score-1")
    assert (scored.score, scored.error, scored.outputs, scored.usage) == (0.25, systemic, None, record.usage)
    assert scored.failed and scored.source == "scorer"


async def test_a_metric_that_raises_scores_the_failure_score_never_systemic() -> None:
    scored = await score(prediction(outputs={"reply": "4"}))  # exact_match:answer: no answer field
    assert scored.score == 0.25 and scored.error is not None
    assert (scored.error.type, scored.error.systemic) == ("MetricError", False)
    assert "answer" in scored.error.message


async def test_an_async_metric_is_awaited_and_its_feedback_kept() -> None:
    async def graded(example: Any, outputs: Any) -> MetricResult:
        return MetricResult(0.5, f"half of {example.answer}")

    scored = await score_prediction(
        prediction(outputs={"answer": "4"}), job(), lambda _: graded, source="scorer", worker_id="s"
    )
    assert (scored.score, scored.feedback, scored.error) == (0.5, "half of 4", None)


def test_a_metric_is_built_once_per_spec_and_per_job() -> None:
    book = MetricBook(allow_modules=())
    first = book.of_job(job())
    assert book.of_job(job()) is first  # another EvalJob object, the same spec
    assert book.metric(MetricSpec(name="exact_match:answer")) is first
    assert book.metric(MetricSpec(name="f1:answer")) is not first


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (MetricSpec(name="nope:answer"), "unknown_metric"),
        (MetricSpec(name="os.path:exists", kind="import"), "security_policy"),
        (
            MetricSpec(name="judge", kind="judge", judge_signature="question, answer -> ok: bool"),
            "unknown_metric",
        ),
    ],
)
def test_a_metric_that_cannot_or_may_not_be_built_is_a_poison_message(spec: MetricSpec, reason: str) -> None:
    book = MetricBook(allow_modules=("workers_kafka",))
    for _ in range(2):  # the refusal is remembered and raised again
        with pytest.raises(PoisonMessageError) as raised:
            book.of_job(job(spec))
        assert raised.value.reason == reason


def test_an_allowed_module_is_imported() -> None:
    book = MetricBook(allow_modules=("dspex.client._runs",))
    metric = book.metric(MetricSpec(name="dspex.client._runs:ran", kind="import"))
    assert metric({}, {}) == 1.0
