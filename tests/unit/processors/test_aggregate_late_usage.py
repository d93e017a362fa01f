"""Usage that comes late or alone: attempts after a job's end, and usage reports of cancelled runs.

Rules under test (see :mod:`dspex.processors.aggregate_state`): a new attempt arriving after the
terminal status is charged and the terminal status is sent again with only its usage changed; a
record seen before, or one without an attempt id, changes nothing; a UsageReport charges its usage
once and counts no example; once the late window is over (or for a job ended by an aggregator that
dropped its chunks) nothing is charged any more.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dspex.errors import SchemaError
from dspex.lm import Usage
from dspex.lm.usage import record_usage
from dspex.processors.aggregate_state import (
    LATE_USAGE_WINDOW_S,
    AggregateBatch,
    JobMeta,
    StatusClock,
    job_totals,
)
from dspex.processors.common import WorkerOptions
from dspex.processors.predictor import Predictor
from dspex.schemas import (
    Cancel,
    EvalJob,
    JobStatus,
    MetricSpec,
    ScoreRecord,
    UsageRecord,
    UsageReport,
    decode,
    encode,
    ids_from_headers,
    is_usage_report,
)
from dspex.schemas.tasks import Task
from dspex.streams.config import KafkaSettings

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _usage(calls: int) -> UsageRecord:
    return UsageRecord(
        prompt_tokens=10 * calls, completion_tokens=2 * calls, cost_usd=0.5 * calls, lm_calls=calls
    )


def _job(n: int = 2, **limits: Any) -> EvalJob:
    metric = MetricSpec(name="exact_match:answer")
    return EvalJob(job_id="j1", candidate_ids=["c1"], metric=metric, num_examples=n, **limits)


def _score(index: int, attempt_id: str | None, calls: int = 1, value: float = 1.0) -> ScoreRecord:
    return ScoreRecord(
        job_id="j1",
        candidate_id="c1",
        example_index=index,
        task_id=f"t{index}",
        score=value,
        usage=_usage(calls),
        attempt_id=attempt_id,
    )


def _report(index: int, attempt_id: str, calls: int = 1) -> UsageReport:
    return UsageReport(
        job_id="j1",
        candidate_id="c1",
        example_index=index,
        task_id=f"t{index}",
        attempt_id=attempt_id,
        usage=_usage(calls),
        worker_id="w1",
    )


class _Tables:
    """The tables as dicts (values through JSON, as the changelog keeps them) and the statuses sent."""

    def __init__(self) -> None:
        self.jobs: dict[str, Any] = {}
        self.chunks: dict[str, Any] = {}
        self.sent: list[bytes] = []
        self.ticks = 0
        self.clock = StatusClock(self._now)

    def _now(self) -> datetime:
        self.ticks += 1
        return T0 + timedelta(seconds=self.ticks)

    def run(self, *items: EvalJob | Cancel | ScoreRecord | UsageReport) -> list[str]:
        batch = AggregateBatch(self.jobs, self.chunks, self.clock)
        outcomes = []
        for item in items:
            if isinstance(item, EvalJob):
                batch.add_job(item, 0)
            elif isinstance(item, Cancel):
                batch.add_cancel(item, 0)
            elif isinstance(item, UsageReport):
                outcomes.append(batch.add_usage_report(item, 0))
            else:
                outcomes.append(batch.add_score(item, 0))
        result = batch.finish()
        self.jobs.update({key: json.loads(json.dumps(value)) for key, (_, value) in result.jobs.items()})
        self.chunks.update({key: json.loads(json.dumps(value)) for key, (_, value) in result.chunks.items()})
        self.sent.extend(raw for _, raw in result.statuses)
        return outcomes

    def last(self) -> JobStatus:
        return decode(self.sent[-1], JobStatus)

    def meta(self) -> JobMeta:
        return JobMeta.from_value("j1", self.jobs["j1"])


def test_a_new_attempt_after_the_end_is_charged_and_nothing_else_changes() -> None:
    tables = _Tables()
    tables.run(_job(), _score(0, "a0"), _score(1, "a1", value=0.0))
    first = tables.last()
    assert first.state == "completed" and first.usage.lm_calls == 2

    assert tables.run(_score(1, "b1", calls=3, value=1.0)) == ["charged"]
    again = tables.last()
    assert again.usage.lm_calls == 5 and again.usage.prompt_tokens == 50 and again.usage.cost_usd == 2.5
    assert again.candidates[0].usage == again.usage
    assert again.seq > first.seq
    unchanged = {"usage", "candidates", "seq", "updated_at"}
    assert again.model_dump(exclude=unchanged) == first.model_dump(exclude=unchanged)
    assert again.candidates[0].model_dump(exclude={"usage"}) == first.candidates[0].model_dump(
        exclude={"usage"}
    )
    assert again.finished_at == first.finished_at and again.candidates[0].score == 50.0


def test_a_record_seen_before_or_without_an_attempt_id_changes_nothing_after_the_end() -> None:
    tables = _Tables()
    tables.run(_job(), _score(0, "a0"), _score(1, "a1"))
    tables.run(_score(1, "b1"))
    charged = tables.sent[-1]
    assert tables.run(_score(0, "a0"), _score(1, "b1"), _score(1, None, calls=4)) == [
        "duplicate",
        "duplicate",
        "ignored",
    ]
    assert tables.sent[-1] == charged  # the same bytes once more
    assert tables.last().usage.lm_calls == 3


def test_a_usage_report_charges_once_and_counts_no_example() -> None:
    tables = _Tables()
    assert tables.run(_job(), _report(0, "r0", calls=2), _report(0, "r0", calls=2)) == [
        "charged",
        "duplicate",
    ]
    totals = job_totals(tables.meta(), tables.chunks.get)["c1"]
    assert (totals.done, totals.lm_calls) == (0, 2)
    assert tables.sent == []  # nothing counted: the job runs on

    assert tables.run(_score(0, "a0"), _score(1, "a1")) == ["counted", "counted"]  # the re-runs count
    final = tables.last()
    assert (final.state, final.done, final.usage.lm_calls) == ("completed", 2, 4)
    assert final.candidates[0].score_sum == 2.0


def test_a_report_after_a_cancel_is_charged_to_the_cancelled_job() -> None:
    tables = _Tables()
    tables.run(_job(n=5), _score(0, "a0"), Cancel(job_id="j1", reason="enough"))
    assert tables.last().state == "cancelled"
    assert tables.run(_report(3, "r3", calls=2), _score(4, "a4")) == ["charged", "charged"]
    status = tables.last()
    assert (status.state, status.stop_reason, status.done, status.usage.lm_calls) == (
        "cancelled",
        "cancelled",
        1,
        4,
    )


def test_late_charges_never_change_the_outcome_of_a_cost_limit() -> None:
    tables = _Tables()
    tables.run(_job(max_cost_usd=1.0), _score(0, "a0"), _score(1, "a1"))  # $1.00: within the budget
    assert tables.last().state == "completed"
    tables.run(_score(1, "b1", calls=4))
    status = tables.last()
    assert (status.state, status.reason, status.usage.cost_usd) == ("completed", None, 3.0)


def test_nothing_is_charged_once_the_chunks_are_gone() -> None:
    tables = _Tables()
    tables.run(_job(), _score(0, "a0"), _score(1, "a1"))
    meta = tables.meta()
    assert meta.late_until == pytest.approx(
        (T0 + timedelta(seconds=tables.ticks)).timestamp() + LATE_USAGE_WINDOW_S, abs=5
    )
    # What the aggregator does once the window is over (or what an older one left: no late_until).
    meta.late_until = None
    tables.jobs["j1"] = meta.to_value()
    tables.chunks.clear()
    sent = tables.sent[-1]
    assert tables.run(_score(1, "b1"), _report(0, "r0")) == ["ignored", "ignored"]
    assert tables.sent[-1] == sent and tables.chunks == {}


def test_usage_reports_are_told_apart_and_unreadable_as_scores() -> None:
    raw = encode(_report(0, "r0"))
    assert is_usage_report(raw) and not is_usage_report(encode(_score(0, "a0")))
    assert not is_usage_report(b"") and not is_usage_report(None) and not is_usage_report(b"garbage")
    back = decode(raw, UsageReport)
    assert (back.attempt_id, back.usage, back.kind) == ("r0", _usage(1), "usage")
    with pytest.raises(SchemaError):  # an aggregator from before reports dead-letters it
        decode(raw, ScoreRecord)


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def produce_record(self, topic: str, record: Any) -> None:
        self.sent.append((topic, record))


def test_a_cancelled_runs_report_names_the_job_only_in_its_headers() -> None:
    predictor = Predictor(KafkaSettings(bootstrap_servers="127.0.0.1:1"), WorkerOptions(prefix="p."))
    producer = _Producer()
    predictor.producer = producer  # type: ignore[assignment]
    task = Task.build(job_id="j1", candidate_id="c1", example_index=7, example={"q": 1}, input_keys=["q"])

    async def cancelled_runs() -> None:
        predictor._report_unfinished(task, Usage())  # no call answered: nothing to report
        predictor._report_unfinished(task, Usage(prompt_tokens=5, completion_tokens=1, lm_calls=1))
        await asyncio.gather(*predictor._reports)

    asyncio.run(cancelled_runs())
    [(topic, record)] = producer.sent
    assert topic == "p.scores" and record.key == b"j1"
    report = decode(record.value, UsageReport)
    assert (report.example_index, report.usage.lm_calls, report.worker_id) == (7, 1, predictor.worker_id)
    ids = ids_from_headers(record.headers)
    assert (ids.job_id, ids.candidate_id, ids.example_index) == ("j1", None, None)


class _TwoCallProgram:
    """A program whose first LM call is answered and whose second never is (until cancelled)."""

    async def acall(self, **inputs: Any) -> Any:
        record_usage(Usage(prompt_tokens=7, completion_tokens=3, lm_calls=1))
        await asyncio.Event().wait()


def test_a_run_cancelled_after_an_answered_call_reports_that_call() -> None:
    predictor = Predictor(KafkaSettings(bootstrap_servers="127.0.0.1:1"), WorkerOptions(prefix="p."))
    producer = _Producer()
    predictor.producer = producer  # type: ignore[assignment]
    task = Task.build(job_id="j1", candidate_id="c1", example_index=3, example={"q": 1}, input_keys=["q"])

    async def resolve(_: Task) -> tuple[Any, None]:
        return _TwoCallProgram(), None

    predictor._resolve = resolve  # type: ignore[method-assign]

    async def revoked_mid_run() -> None:
        running = asyncio.create_task(predictor.predict(task))
        await asyncio.sleep(0.05)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await asyncio.gather(*predictor._reports)

    asyncio.run(revoked_mid_run())
    [(_, record)] = producer.sent
    report = decode(record.value, UsageReport)
    assert (report.task_id, report.usage.lm_calls, report.usage.prompt_tokens) == (task.task_id, 1, 7)
