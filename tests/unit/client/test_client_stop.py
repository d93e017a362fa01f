"""How the client ends a job by its status's stop_reason: results, partial results, or an error."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.client._stop import stop_reason_of, stopped_early
from dspex.errors import ConfigurationError, JobError, LMAuthenticationError, LMError
from dspex.evaluate import Evaluate
from dspex.primitives import Example
from dspex.schemas import ErrorInfo, JobStatus, ScoreRecord, StatusMessage, UsageRecord, decode, encode

KEY_REFUSED = "Incorrect API key provided (401)"


def status(state: str = "failed", **fields: Any) -> JobStatus:
    return JobStatus(job_id="j1", state=state, total_tasks=20, **fields)  # type: ignore[arg-type]


def record(index: int, error: ErrorInfo | None = None) -> ScoreRecord:
    return ScoreRecord(job_id="j1", candidate_id="c1", example_index=index, task_id=f"t{index}",
                       score=0.0 if error else 1.0, error=error)  # fmt: skip


def refused(index: int) -> ScoreRecord:
    return record(
        index, ErrorInfo(type="LMAuthenticationError", message=KEY_REFUSED, status=401, systemic=True)
    )


def flaky(index: int) -> ScoreRecord:
    return record(index, ErrorInfo(type="LMServerError", message="503", status=503))


def local_error() -> Exception:
    """What local Evaluate raises when the LM refuses the key."""

    def program(**inputs: Any) -> Any:
        raise LMAuthenticationError(KEY_REFUSED, status=401)

    devset = [Example(question="q", answer="a").with_inputs("question")] * 3
    with pytest.raises(Exception) as raised:
        Evaluate(devset=devset, metric=lambda *a: 1.0, num_threads=1, max_errors=10)(program)
    return raised.value


def test_a_systemic_stop_raises_what_local_evaluate_raises_also_as_a_job_error() -> None:
    final = status(errors=12, reason=KEY_REFUSED, stop_reason="systemic")
    with pytest.raises(LMAuthenticationError) as raised:
        stopped_early(final, [flaky(0), *map(refused, range(1, 12))], max_errors=10)
    error = raised.value
    assert isinstance(error, type(local_error())) and str(error) == str(local_error()) == KEY_REFUSED
    assert isinstance(error, JobError) and (error.job_id, error.state, error.reason) == (
        "j1",
        "failed",
        KEY_REFUSED,
    )
    assert error.status == 401 and "job j1 failed on the cluster" in error.__notes__[0]


def test_a_systemic_stop_of_a_program_the_workers_cannot_build_is_that_error() -> None:
    info = ErrorInfo(type="ConfigurationError", message="no LM is configured", systemic=True)
    with pytest.raises(ConfigurationError, match="no LM is configured") as raised:
        stopped_early(status(stop_reason="systemic"), [record(0, info)])
    assert isinstance(raised.value, JobError) and isinstance(raised.value, ValueError)


def test_a_systemic_stop_without_its_record_is_a_job_error() -> None:
    with pytest.raises(JobError, match="job j1 failed: bad key") as raised:
        stopped_early(status(reason="bad key", stop_reason="systemic"), [])
    assert not isinstance(raised.value, LMError)


@pytest.mark.parametrize("reason", ["max_errors", "max_cost"])
def test_a_limit_stop_gives_partial_results(reason: str) -> None:
    assert stopped_early(status(stop_reason=reason), [flaky(0)]) is True


@pytest.mark.parametrize("reason", ["cancelled", "tasks_missing", "invalid_submit"])
def test_other_stops_raise_a_job_error_with_the_reason(reason: str) -> None:
    state = "cancelled" if reason == "cancelled" else "failed"
    with pytest.raises(JobError, match=f"job j1 {state}: why") as raised:
        stopped_early(status(state, reason="why", stop_reason=reason), [], max_errors=0, max_cost_usd=0.0)
    assert raised.value.state == state


def test_a_completed_job_is_not_stopped_early() -> None:
    assert stopped_early(status("completed"), [flaky(0)], max_errors=0) is False


# -- statuses of an aggregator before schema 1.1: no stop_reason ----------------------------------


def test_without_stop_reason_a_systemic_record_decides_before_max_errors() -> None:
    final = status(errors=12, reason=KEY_REFUSED)
    records = [flaky(0), *map(refused, range(1, 12))]
    assert stop_reason_of(final, records, max_errors=10) == "systemic"
    with pytest.raises(LMAuthenticationError):
        stopped_early(final, records, max_errors=10)


def test_without_stop_reason_the_limits_are_read_from_the_counts() -> None:
    assert stop_reason_of(status(errors=3), [flaky(0)], max_errors=2) == "max_errors"
    over = status(usage=UsageRecord(cost_usd=1.25))
    assert stop_reason_of(over, [], max_cost_usd=1.0) == "max_cost"
    assert stop_reason_of(status("cancelled"), []) == "cancelled"


def test_without_stop_reason_a_cost_exactly_at_the_budget_is_not_over_it() -> None:
    at_budget = status(usage=UsageRecord(cost_usd=1.0))  # what the aggregator never fails a job for
    assert stop_reason_of(at_budget, [], max_cost_usd=1.0) is None
    with pytest.raises(JobError):
        stopped_early(at_budget, [], max_cost_usd=1.0)


def test_a_stop_reason_this_reader_does_not_know_reads_as_absent() -> None:
    data = encode(status(errors=3, stop_reason="max_errors")).replace(b'"max_errors"', b'"quota_exceeded"')
    read = decode(data, StatusMessage)
    assert isinstance(read, JobStatus) and read.stop_reason is None
    assert stopped_early(read, [flaky(0)], max_errors=2) is True  # inferred, as from an older writer
