"""The jobs list: sub-jobs folded under their optimization, filtered by state/kind/name, paged.

An evaluation an optimizer submits carries its optimization's id (``JobStatus.parent_job_id``, set
by the aggregator from the job's options). Such an evaluation is listed under its optimization
(``children``) and not as a row of its own; one whose optimization is not on the status topic
(compacted away, or written by a client that does not publish it) stays a row of its own.

Filters and paging apply to the top-level rows; an optimization's sub-jobs come with it whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from dspex.errors import ConfigurationError
from dspex.schemas.status import JobState, JobStatus, OptimizeStatus

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "JobQuery", "group_jobs", "int_param", "page_jobs"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_STATES = frozenset(get_args(JobState))
_KINDS = frozenset({"eval", "optimize"})

Status = JobStatus | OptimizeStatus


@dataclass(frozen=True)
class JobQuery:
    """What ``GET /api/jobs`` was asked for."""

    states: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    name: str = ""
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    flat: bool = False

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> JobQuery:
        """From query parameters ``state``, ``kind`` (comma-separated), ``name`` (a case-insensitive
        part of the name or id), ``offset``, ``limit``, ``flat`` (``1``/``true``: no folding).

        Raises ConfigurationError naming the bad parameter.
        """
        states = _choices(params.get("state", ""), _STATES, "state")
        kinds = _choices(params.get("kind", ""), _KINDS, "kind")
        offset = _integer(params.get("offset", "0"), "offset", 0, None)
        limit = _integer(params.get("limit", str(DEFAULT_LIMIT)), "limit", 1, MAX_LIMIT)
        flat = params.get("flat", "").lower() in {"1", "true", "yes"}
        return cls(states, kinds, params.get("name", "").strip().lower(), offset, limit, flat)

    def matches(self, status: Status) -> bool:
        """Whether one job passes the state, kind and name filters."""
        if self.states and status.state not in self.states:
            return False
        if self.kinds and status.kind not in self.kinds:
            return False
        if self.name:
            haystack = f"{status.name or ''}\n{status.job_id}".lower()
            return self.name in haystack
        return True


def order_key(status: Status) -> tuple[datetime, str]:
    """Newest first by start (an unstarted job by its latest status), then by id: a stable order,
    so rows do not jump between pages as running jobs report."""
    return (status.started_at or status.updated_at, status.job_id)


def group_jobs(statuses: Iterable[Status]) -> tuple[list[Status], dict[str, list[Status]]]:
    """Top-level jobs (newest first), and each optimization's sub-jobs (newest first) by its id."""
    every = list(statuses)
    parents = {status.job_id for status in every if isinstance(status, OptimizeStatus)}
    top: list[Status] = []
    children: dict[str, list[Status]] = {}
    for status in every:
        parent = status.parent_job_id if isinstance(status, JobStatus) else None
        if parent is not None and parent in parents:
            children.setdefault(parent, []).append(status)
        else:
            top.append(status)
    top.sort(key=order_key, reverse=True)
    for subs in children.values():
        subs.sort(key=order_key, reverse=True)
    return top, children


def page_jobs(statuses: Iterable[Status], query: JobQuery) -> tuple[list[Status], int]:
    """The rows of the requested page and how many rows matched in all (flat or top-level)."""
    if query.flat:
        rows = sorted(statuses, key=order_key, reverse=True)
    else:
        rows, _ = group_jobs(statuses)
    matching = [status for status in rows if query.matches(status)]
    return matching[query.offset : query.offset + query.limit], len(matching)


def int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    """An integer query parameter within bounds (ConfigurationError naming it otherwise)."""
    return _integer(params.get(name, str(default)), name, low, high)


def _choices(raw: str, allowed: frozenset[str], name: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = sorted(chosen - allowed)
    if unknown:
        raise ConfigurationError(f"unknown {name} {', '.join(unknown)}: use {', '.join(sorted(allowed))}")
    return chosen


def _integer(raw: str, name: str, low: int, high: int | None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigurationError(f"{name} must be {bound}, not {value}")
    return value


def public_query(query: JobQuery, total: int) -> dict[str, Any]:
    """The paging part of the answer."""
    return {"total": total, "offset": query.offset, "limit": query.limit}
