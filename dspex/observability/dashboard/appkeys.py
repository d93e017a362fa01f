"""What the dashboard's handlers find on the app: its source of statuses and heartbeats, the jobs'
progress history, and the reader of a job's stored records."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from aiohttp import web

from dspex.observability.dashboard.records import JobRecords
from dspex.observability.dashboard.stalls import ProgressTracker
from dspex.schemas.status import JobStatus, OptimizeStatus
from dspex.schemas.workers import WorkerHeartbeat

__all__ = ["RECORDS", "SOURCE", "TRACKER", "DashboardSource", "RecordsReader", "Status"]

Status = JobStatus | OptimizeStatus


class DashboardSource(Protocol):
    """Where the dashboard reads jobs and workers from."""

    def statuses(self) -> Iterable[Status]: ...

    def status(self, job_id: str) -> Status | None: ...

    def heartbeats(self) -> Iterable[WorkerHeartbeat]: ...


RecordsReader = Callable[[JobStatus], Awaitable[JobRecords]]
"""Reads an evaluation's stored job and score records."""

SOURCE: web.AppKey[DashboardSource] = web.AppKey("source")
TRACKER: web.AppKey[ProgressTracker] = web.AppKey("tracker")
RECORDS: web.AppKey[RecordsReader | None] = web.AppKey("records")
