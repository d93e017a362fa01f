"""The aggregator names why a job stopped (``JobStatus.stop_reason``), deciding the systemic cause first."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.processors.aggregate_state import AggregateBatch, JobMeta, StatusClock, decide, invalid_job_id
from dspex.schemas import Cancel, ErrorInfo, EvalJob, JobStatus, MetricSpec, ScoreRecord, UsageRecord, decode


class Tables:
    """The aggregator's tables as dicts, updated from each batch's result."""

    def __init__(self) -> None:
        self.jobs: dict[str, Any] = {}
        self.chunks: dict[str, Any] = {}
        self.sent: list[JobStatus] = []
        self.clock = StatusClock()

    def run(self, *items: EvalJob | ScoreRecord | Cancel) -> None:
        batch = AggregateBatch(self.jobs, self.chunks, self.clock)
        for item in items:
            if isinstance(item, EvalJob):
                batch.add_job(item, 0)
            elif isinstance(item, Cancel):
                batch.add_cancel(item, 0)
            else:
                batch.add_score(item, 0)
        self.finish(batch)

    def finish(self, batch: AggregateBatch) -> None:
        result = batch.finish()
        self.jobs.update({key: value for key, (_, value) in result.jobs.items()})
        self.chunks.update({key: value for key, (_, value) in result.chunks.items()})
        self.sent.extend(decode(raw, JobStatus) for _, raw in result.statuses)


def job(n: int = 20, **limits: Any) -> EvalJob:
    return EvalJob(job_id="j1", candidate_ids=["c1"], metric=MetricSpec(name="exact_match:answer"),
                   num_examples=n, **limits)  # fmt: skip


def failed(index: int, *, systemic: bool = False, cost: float = 0.0) -> ScoreRecord:
    error = ErrorInfo(
        type="LMAuthenticationError" if systemic else "LMServerError", message="no", systemic=systemic
    )
    return ScoreRecord(job_id="j1", candidate_id="c1", example_index=index, task_id=f"t{index}", score=0.0,
                       error=error, usage=UsageRecord(cost_usd=cost))  # fmt: skip


def ok(index: int, cost: float = 0.0) -> ScoreRecord:
    return ScoreRecord(job_id="j1", candidate_id="c1", example_index=index, task_id=f"t{index}", score=1.0,
                       usage=UsageRecord(cost_usd=cost))  # fmt: skip


def test_a_systemic_error_with_max_errors_set_is_systemic_even_past_the_limit() -> None:
    tables = Tables()
    # the batch that brings the first 401 also brings more failures than max_errors allows
    tables.run(job(max_errors=10), *(failed(i, systemic=True) for i in range(12)))
    [status] = tables.sent
    assert (status.state, status.stop_reason, status.errors) == ("failed", "systemic", 12)


def test_more_failures_than_max_errors_stop_the_job_as_max_errors() -> None:
    tables = Tables()
    tables.run(job(max_errors=2), failed(0), failed(1), ok(2))
    assert tables.sent == []
    tables.run(failed(3))
    assert [(s.state, s.stop_reason) for s in tables.sent] == [("failed", "max_errors")]


@pytest.mark.parametrize(("costs", "stopped"), [([0.5, 0.5], False), ([0.5, 0.5, 0.25], True)])
def test_the_cost_budget_is_strictly_over_max_cost(costs: list[float], stopped: bool) -> None:
    tables = Tables()
    tables.run(job(max_cost_usd=1.0), *(ok(i, cost) for i, cost in enumerate(costs)))
    assert [(s.state, s.stop_reason) for s in tables.sent] == ([("failed", "max_cost")] if stopped else [])


def test_a_cancel_is_cancelled_and_a_cancel_for_missing_tasks_fails_the_job() -> None:
    tables = Tables()
    tables.run(job(), ok(0), Cancel(job_id="j1", reason="enough"))
    assert [(s.state, s.stop_reason, s.reason) for s in tables.sent] == [("cancelled", "cancelled", "enough")]

    other = Tables()
    other.run(job(), ok(0), Cancel(job_id="j1", reason="publish failed", stop_reason="tasks_missing"))
    [status] = other.sent
    assert (status.state, status.stop_reason, status.reason) == ("failed", "tasks_missing", "publish failed")


def test_an_undecodable_job_record_fails_its_job_at_once_as_invalid_submit() -> None:
    tables = Tables()
    batch = AggregateBatch(tables.jobs, tables.chunks, tables.clock)
    batch.add_invalid_job("j1", 0, "EvalJob: num_examples: Input should be a valid integer")
    tables.finish(batch)
    [status] = tables.sent
    assert (status.state, status.stop_reason, status.total_tasks) == ("failed", "invalid_submit", 0)
    assert status.reason is not None and "num_examples" in status.reason
    tables.run(job(), ok(0))  # a valid record after it changes nothing: the job is over
    assert tables.sent[-1] == status


def test_a_bad_duplicate_of_a_job_already_read_changes_nothing() -> None:
    tables = Tables()
    tables.run(job(), ok(0))
    batch = AggregateBatch(tables.jobs, tables.chunks, tables.clock)
    batch.add_invalid_job("j1", 0, "garbage")
    tables.finish(batch)
    assert tables.sent == [] and JobMeta.from_value("j1", tables.jobs["j1"]).outcome is None


def test_which_undecodable_job_records_name_a_job_to_fail() -> None:
    assert invalid_job_id(b"j1", b"\xff not json") == "j1"
    assert invalid_job_id(b"j1", b'{"kind": "eval", "job_id": 3}') == "j1"
    assert invalid_job_id(b"j1", b'{"kind": "optimize"}') is None  # the optimizer coordinator's
    assert invalid_job_id(b"j1", b'{"kind": "cancel"}') is None  # a bad cancel starts nothing
    assert invalid_job_id(None, b"{}") is None and invalid_job_id(b"\xff", b"{}") is None


def test_a_completed_job_has_no_stop_reason_and_a_cancel_stored_before_stop_reasons_reads_cancelled() -> None:
    tables = Tables()
    tables.run(job(n=2), ok(0), ok(1))
    assert [(s.state, s.stop_reason) for s in tables.sent] == [("completed", None)]

    # a jobs-table value an aggregator of schema 1.0 wrote: no stop_reason
    meta = JobMeta(job_id="j2", partition=0, started_at="2025-01-01T00:00:00+00:00", known=True,
                   num_examples=1, candidate_ids=["c1"], outcome="cancelled", reason="old")  # fmt: skip
    value = {key: item for key, item in meta.to_value().items() if key != "stop_reason"}
    decision = decide(JobMeta.from_value("j2", value), {})
    assert decision is not None and (decision.state, decision.stop_reason) == ("cancelled", "cancelled")
