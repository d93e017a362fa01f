"""What workers know about jobs: each EvalJob (metric, LM, failure score), cancellations, and states.

Two always-following local copies, read without a consumer group from the beginning of their topics:

* the jobs topic (EvalJob / OptimizeJob / Cancel / PurgeJob, keyed by job id). A Cancel shares its job's key,
  so the reader's own ``key -> latest value`` map would lose the EvalJob behind it: the decoder sorts
  every value into this cache's maps as it is read, and the reader's map is not used;
* the status topic (compacted JobStatus per job), for jobs the aggregator has failed or cancelled.

Each job has an :class:`asyncio.Event` (:meth:`JobCache.stopped`) that is set the moment this cache
reads its cancellation or a cancelled/failed status: a predictor stops the job's running tasks on it.

    >>> async with JobCache(settings, registry) as jobs:  # doctest: +SKIP
    ...     job = await jobs.wait_job("job-1", timeout=10)
    ...     jobs.stop_reason("job-1")  # None, "cancelled" or "failed"
    ...     await jobs.stopped("job-1").wait()  # until it is cancelled or fails
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dspex.schemas.jobs import Cancel, EvalJob, JobMessage, PurgeJob
from dspex.schemas.serde import decode
from dspex.schemas.status import StatusMessage
from dspex.streams.config import KafkaSettings
from dspex.streams.reader import CompactedReader
from dspex.streams.topics import TopicRegistry

__all__ = ["STOPPED_STATES", "JobCache"]

logger = logging.getLogger(__name__)

# Job states whose remaining tasks are not worth an LM call.
STOPPED_STATES = frozenset({"cancelled", "failed"})


class JobCache:
    """EvalJobs by id, cancellations, and job states; kept up to date in the background."""

    def __init__(
        self, settings: KafkaSettings, registry: TopicRegistry, *, follow_status: bool = True
    ) -> None:
        """``follow_status``: also read the status topic (predictors skip tasks of failed jobs)."""
        self._jobs: dict[str, EvalJob] = {}
        self._cancelled: dict[str, Cancel] = {}
        self._purged: set[str] = set()  # PurgeJob read: the job is gone
        self._stopped: dict[str, asyncio.Event] = {}
        self._job_reader: CompactedReader[Any] = CompactedReader(
            settings, registry.name("jobs"), decoder=self._sort_job_message
        )
        self._status_reader: CompactedReader[Any] | None = (
            CompactedReader(settings, registry.name("status"), decoder=self._sort_status)
            if follow_status
            else None
        )

    async def __aenter__(self) -> JobCache:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start following both topics."""
        await self._job_reader.start()
        if self._status_reader is not None:
            await self._status_reader.start()

    async def aclose(self) -> None:
        """Stop following."""
        await self._job_reader.aclose()
        if self._status_reader is not None:
            await self._status_reader.aclose()

    async def wait_caught_up(self, timeout: float) -> None:
        """Wait until everything on the topics when the cache started has been read."""
        readers = [r for r in (self._job_reader, self._status_reader) if r is not None]
        await asyncio.gather(*(reader.wait_caught_up(timeout) for reader in readers))

    def job(self, job_id: str) -> EvalJob | None:
        """The evaluation ``job_id``, if it has been read."""
        return self._jobs.get(job_id)

    async def wait_job(self, job_id: str, timeout: float) -> EvalJob | None:
        """The evaluation ``job_id``, waiting up to ``timeout`` s for it; None if it did not come."""
        if job_id in self._jobs:
            return self._jobs[job_id]
        try:
            await self._job_reader.wait_for(job_id, timeout)
        except TimeoutError:
            return None
        return self._jobs.get(job_id)  # None when only a Cancel (or an OptimizeJob) came

    def eval_jobs(self) -> list[EvalJob]:
        """Every evaluation read so far."""
        return list(self._jobs.values())

    def status(self, job_id: str) -> Any:
        """The latest status of ``job_id`` read (None: none yet, or the status topic is not followed)."""
        return self._status_reader.get(job_id) if self._status_reader is not None else None

    def purged(self, job_id: str) -> bool:
        """Whether the job was purged (``dspex purge``: a PurgeJob, or its status tombstoned)."""
        if job_id in self._purged:
            return True
        return self._status_reader is not None and self._status_reader.tombstoned(job_id)

    def failure_score(self, job_id: str | None) -> float:
        """The job's failure score (0.0 when the job is not known)."""
        job = self._jobs.get(job_id) if job_id else None
        return job.failure_score if job is not None else 0.0

    def stop_reason(self, job_id: str) -> str | None:
        """ "cancelled" or "failed" when the job's remaining tasks should be skipped, else None."""
        if job_id in self._cancelled or job_id in self._purged:
            return "cancelled"  # a purged job's remaining tasks are not worth an LM call either
        status = self._status_reader.get(job_id) if self._status_reader is not None else None
        state = getattr(status, "state", None)
        return state if state in STOPPED_STATES else None

    def stopped(self, job_id: str) -> asyncio.Event:
        """An event set once ``job_id`` is cancelled or has failed (already set if it is).

        Call it on the cache's event loop: the readers set it there, as they read.
        """
        event = self._stopped.get(job_id)
        if event is None:
            event = self._stopped[job_id] = asyncio.Event()
            if self.stop_reason(job_id) is not None:
                event.set()
        return event

    def _mark_stopped(self, job_id: str) -> None:
        event = self._stopped.get(job_id)
        if event is not None:
            event.set()  # a job nobody asked about yet gets its event already set, in stopped()

    # The readers call these on the event loop, for every value they read.

    def _sort_job_message(self, value: bytes) -> Any:
        message = decode(value, JobMessage)
        if isinstance(message, EvalJob):
            self._jobs[message.job_id] = message
        elif isinstance(message, Cancel):
            self._cancelled[message.job_id] = message
            logger.info("job %s cancelled: %s", message.job_id, message.reason or "no reason given")
            self._mark_stopped(message.job_id)
        elif isinstance(message, PurgeJob):
            self._purged.add(message.job_id)
            self._mark_stopped(message.job_id)
        return message

    def _sort_status(self, value: bytes) -> Any:
        status = decode(value, StatusMessage)
        job_id = getattr(status, "job_id", None)
        if isinstance(job_id, str) and getattr(status, "state", None) in STOPPED_STATES:
            self._mark_stopped(job_id)
        return status
