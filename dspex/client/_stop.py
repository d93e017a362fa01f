"""How the client ends a job's wait: results, partial results, or the error local ``Evaluate`` raises.

The aggregator decides why a job stopped and says so in ``JobStatus.stop_reason``; the client acts
on that and never re-derives it, except for statuses written before stop reasons existed (schema
1.0), where it infers the reason the way that aggregator decided it: a systemic error first, then
the job's own limits.

- ``completed``: the results;
- ``max_errors`` / ``max_cost``: the partial results, ``stopped_early=True``;
- ``systemic``: raised as local Evaluate raises it (a 401 is an :class:`~dspex.errors.LMAuthenticationError`,
  a program the workers cannot build a :class:`~dspex.errors.ProgramLoadError`, ...), which is a
  :class:`~dspex.errors.JobError` too, carrying the job's id, state and reason;
- anything else (cancelled, tasks missing, an invalid job, a reason this client does not know):
  :class:`~dspex.errors.JobError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from dspex import errors
from dspex.errors import DspexError, JobError, LMError
from dspex.schemas import (
    LIMIT_STOP_REASONS,
    ErrorInfo,
    JobStatus,
    ScoreRecord,
    StopReason,
    over_cost_budget,
)

__all__ = ["job_error", "stop_reason_of", "stopped_early", "systemic_error"]


def stopped_early(
    status: JobStatus,
    records: Sequence[ScoreRecord],
    *,
    max_errors: int | None = None,
    max_cost_usd: float | None = None,
) -> bool:
    """False for a completed job, True for one its own limits stopped; raises for any other end.

    ``max_errors`` / ``max_cost_usd`` are the job's limits, used only for a status without a
    ``stop_reason`` (None: unknown, and such a failed job raises).
    """
    if status.state == "completed":
        return False
    reason = stop_reason_of(status, records, max_errors=max_errors, max_cost_usd=max_cost_usd)
    if reason in LIMIT_STOP_REASONS:
        return True
    if reason == "systemic":
        raise systemic_error(status, records)
    raise job_error(status)


def stop_reason_of(
    status: JobStatus,
    records: Sequence[ScoreRecord],
    *,
    max_errors: int | None = None,
    max_cost_usd: float | None = None,
) -> StopReason | None:
    """The status's own stop reason; for a status without one, the reason its writer acted on."""
    if status.stop_reason is not None or status.state not in ("failed", "cancelled"):
        return status.stop_reason
    return _inferred(status, records, max_errors, max_cost_usd)


def _inferred(
    status: JobStatus, records: Sequence[ScoreRecord], max_errors: int | None, max_cost_usd: float | None
) -> StopReason | None:
    # An aggregator before schema 1.1 failed a job on a systemic error first, then on its limits.
    if status.state == "cancelled":
        return "cancelled"
    if _systemic_info(records) is not None:
        return "systemic"
    if max_errors is not None and status.errors > max_errors:
        return "max_errors"
    if over_cost_budget(status.usage.cost_usd, max_cost_usd):
        return "max_cost"
    return None


def job_error(status: Any) -> JobError:
    """The JobError of a job that did not complete (failed, cancelled), with its reason."""
    reason = getattr(status, "reason", None)
    return JobError(
        f"job {status.job_id} {status.state}" + (f": {reason}" if reason else ""),
        job_id=status.job_id,
        state=status.state,
        reason=reason,
    )


def systemic_error(status: JobStatus, records: Sequence[ScoreRecord]) -> JobError:
    """The error local Evaluate would raise for the job's systemic failure, also a JobError.

    Built from the first systemic error among the job's records (its class name, message and HTTP
    status); a plain JobError when none is there or its class is not one of dspex's.
    """
    info = _systemic_info(records)
    base = _error_class(info.type) if info is not None else None
    if info is None or base is None:
        return job_error(status)
    cls = _job_error_class(base)
    # Both bases' attributes are set here: their __init__s each expect to be the only one.
    error: Any = cls.__new__(cls)
    Exception.__init__(error, info.message)
    if isinstance(error, LMError):
        error.status, error.retry_after, error.model, error.api_base = info.status, None, None, None
    error.job_id, error.state, error.reason = status.job_id, status.state, status.reason or info.message
    error.add_note(f"job {status.job_id} {status.state} on the cluster: every task would fail the same way")
    return cast(JobError, error)


def _systemic_info(records: Sequence[ScoreRecord]) -> ErrorInfo | None:
    return next((r.error for r in records if r.error is not None and r.error.systemic), None)


def _error_class(name: str) -> type[DspexError] | None:
    found = getattr(errors, name, None)
    usable = isinstance(found, type) and issubclass(found, DspexError) and not issubclass(found, JobError)
    return found if usable else None


_JOB_ERROR_CLASSES: dict[type[DspexError], type[JobError]] = {}


def _job_error_class(base: type[DspexError]) -> type[JobError]:
    """``base`` and JobError at once: ``except LMAuthenticationError`` works as it does around local
    Evaluate, and ``except JobError`` as it does around every other failed job. Named as ``base``,
    so the error reads the same as the local one."""
    made = _JOB_ERROR_CLASSES.get(base)
    if made is None:
        doc = f"{base.__name__} that failed a cluster job (a JobError too)."
        made = type(base.__name__, (base, JobError), {"__doc__": doc, "__module__": __name__})
        _JOB_ERROR_CLASSES[base] = made
    return made
