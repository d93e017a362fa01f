"""What a :class:`dspex.Client` can ask about any job (status, results, cancel) and the cluster.

One layer of :class:`dspex.Client`; :mod:`dspex.client._client` lists them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from dspex._sync import run_sync
from dspex.client import _cluster, _optimize
from dspex.client._client_base import ClientBase, Submitted
from dspex.client._cluster import Follow
from dspex.errors import DspexError, JobError
from dspex.primitives import Module
from dspex.schemas import Cancel, JobStatus, OptimizeStatus, ScoreRecord, WorkerHeartbeat
from dspex.streams.admin import GroupLag
from dspex.streams.serde import to_record

__all__ = ["JobsClient"]

# One logger for the whole client, whichever of its modules writes the line.
logger = logging.getLogger("dspex.client._client")


class JobsClient(ClientBase):
    """A client's job control and reading: cancel, status, wait, results; workers and lag."""

    # -- jobs --------------------------------------------------------------------------------------

    def cancel(self, job_id: str, reason: str = "") -> None:
        """Ask the cluster to stop ``job_id``: workers skip its remaining tasks."""
        run_sync(self.acancel(job_id, reason))

    async def acancel(self, job_id: str, reason: str = "") -> None:
        """Async form of :meth:`cancel`."""
        await self._aready(create_topics=True)
        record = to_record(Cancel(job_id=job_id, reason=reason or "cancelled by a client"), role="jobs")
        producer = self._get_producer()
        await producer.produce_record(self.registry.name("jobs"), record)

    @contextlib.asynccontextmanager
    async def _cancelled_with_caller(self, submitted: Sequence[Submitted]) -> AsyncIterator[None]:
        """Cancel these jobs on the cluster if the caller stops waiting for them (its task is cancelled).

        For the executor operations (:meth:`arun`, :meth:`apredict`): nobody reads their results
        afterwards, so an optimization cancelled mid-step must not leave its evaluations spending
        LM calls. A timeout is not a cancellation: there the job keeps running, as documented.
        """
        try:
            yield
        except asyncio.CancelledError:
            reason = "the caller stopped waiting (its optimization was cancelled or stopped)"
            for job_id in [s.submission.job.job_id for s in submitted]:
                try:
                    await self.acancel(job_id, reason)
                except DspexError as exc:
                    logger.warning("could not cancel job %s after its caller stopped: %s", job_id, exc)
            raise

    def status(self, job_id: str) -> JobStatus | OptimizeStatus | None:
        """The latest JobStatus (or OptimizeStatus) of ``job_id``; None when it has none."""
        return run_sync(self.astatus(job_id))

    async def astatus(self, job_id: str) -> JobStatus | OptimizeStatus | None:
        """Async form of :meth:`status`."""
        await self._aready(create_topics=False)
        return await _cluster.read_status(self.settings, self.registry, job_id)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        display_progress: bool = False,
        on_status: Callable[[JobStatus | OptimizeStatus], None] | None = None,
    ) -> JobStatus | OptimizeStatus:
        """Block until ``job_id`` is completed, failed or cancelled; returns that final status.

        JobError when ``timeout`` seconds pass first (the job keeps running). ``on_status`` sees
        every status read meanwhile (a display of the caller's own).
        """
        return run_sync(
            self.await_job(job_id, timeout=timeout, display_progress=display_progress, on_status=on_status)
        )

    async def await_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        display_progress: bool = False,
        on_status: Callable[[JobStatus | OptimizeStatus], None] | None = None,
    ) -> JobStatus | OptimizeStatus:
        """Async form of :meth:`wait`."""
        await self._aready(create_topics=False)
        known = self._submitted.get(job_id)
        follow = Follow(
            job_id,
            partition=known.where.status_partition if known else None,
            start=known.where.status_start if known else None,
            total=known.submission.job.total_tasks if known else 0,
            display_progress=display_progress,
            timeout=timeout,
            on_status=on_status,
        )
        return await _cluster.follow_status(self.settings, self.registry, follow)

    def best_program(self, status: OptimizeStatus) -> Module:
        """The best program of a completed optimization (its terminal ``status``, from :meth:`wait`),
        read from the candidates topic; JobError when it names none or the program is not there."""
        return run_sync(self.abest_program(status))

    async def abest_program(self, status: OptimizeStatus) -> Module:
        """Async form of :meth:`best_program`."""
        await self._aready(create_topics=False)
        return await _optimize.fetch_program(
            self.settings, self.registry, status, allow_modules=self.policy.allow_modules
        )

    def results(self, job_id: str) -> list[ScoreRecord]:
        """The job's per-example score records, de-duplicated (the first per candidate and example
        index wins), ordered by candidate then example index."""
        return run_sync(self.aresults(job_id))

    async def aresults(self, job_id: str) -> list[ScoreRecord]:
        """Async form of :meth:`results`."""
        await self._aready(create_topics=False)
        status = await _cluster.read_status(self.settings, self.registry, job_id)
        known = self._submitted.get(job_id)
        records = await _cluster.read_scores(
            self.settings,
            self.registry,
            job_id,
            partition=known.where.scores_partition if known else None,
            start=known.where.scores_start if known else None,
            status=status,
        )
        order = _candidate_order(status, records)
        return sorted(records, key=lambda r: (order[r.candidate_id], r.example_index))

    def iter_results(self, job_id: str) -> Iterator[ScoreRecord]:
        """The job's per-example score records as they are read, without holding them all.

        De-duplicated like :meth:`results` (the first per candidate and example index) but in the
        order they sit on the scores topic, not sorted; a running job gives what is there when
        reading starts. For jobs too large for :meth:`results`::

            for record in client.iter_results(job_id):
                out.write(record.model_dump_json() + "\\n")

        Raises JobError when no status of ``job_id`` exists (an unknown job, or one submitted
        moments ago whose first status is not out yet).
        """
        batches = self._result_batches(job_id)
        try:
            while True:
                try:
                    batch = run_sync(_next_batch(batches))
                except StopAsyncIteration:
                    return
                yield from batch
        finally:  # also when the caller stops early: the reader must close on its own loop
            run_sync(batches.aclose())

    async def aiter_results(self, job_id: str) -> AsyncIterator[ScoreRecord]:
        """Async form of :meth:`iter_results`: ``async for record in client.aiter_results(job_id)``."""
        async for batch in self._result_batches(job_id):
            for record in batch:
                yield record

    async def _result_batches(self, job_id: str) -> AsyncGenerator[list[ScoreRecord], None]:
        await self._aready(create_topics=False)
        status = await _cluster.read_status(self.settings, self.registry, job_id)
        if status is None:
            raise JobError(
                f"no status of job {job_id} on {self.registry.name('status')}: an unknown job, or one "
                "submitted moments ago (the aggregator publishes its first status within a second)",
                job_id=job_id,
            )
        known = self._submitted.get(job_id)
        async for batch in _cluster.stream_scores(
            self.settings,
            self.registry,
            job_id,
            status=status,
            partition=known.where.scores_partition if known else None,
            start=known.where.scores_start if known else None,
        ):
            yield batch

    # -- the cluster -------------------------------------------------------------------------------

    def jobs(self) -> dict[str, Any]:
        """Every job on the status topic: ``job_id -> latest JobStatus / OptimizeStatus``."""
        return run_sync(self.ajobs())

    async def ajobs(self) -> dict[str, Any]:
        """Async form of :meth:`jobs`."""
        await self._aready(create_topics=False)
        return await _cluster.read_all_latest(
            self.settings, self.registry.name("status"), _cluster.decode_status
        )

    def workers(self) -> list[WorkerHeartbeat]:
        """The latest heartbeat of every worker on the workers topic (alive or not: see ``sent_at``)."""
        return run_sync(self.aworkers())

    async def aworkers(self) -> list[WorkerHeartbeat]:
        """Async form of :meth:`workers`."""
        await self._aready(create_topics=False)
        beats = await _cluster.read_all_latest(
            self.settings, self.registry.name("workers"), _cluster.decode_heartbeat
        )
        return sorted(beats.values(), key=lambda beat: (beat.kind, beat.worker_id))

    def lag(self) -> dict[str, GroupLag]:
        """Lag of each worker group (``predict``, ``score``, ``aggregate``) from the admin API."""
        return run_sync(self.alag())

    async def alag(self) -> dict[str, GroupLag]:
        """Async form of :meth:`lag`."""
        await self._aready(create_topics=False)
        return await asyncio.to_thread(_cluster.read_lag, self._admin, self.registry)


async def _next_batch(batches: AsyncGenerator[list[ScoreRecord], None]) -> list[ScoreRecord]:
    return await anext(batches)


def _candidate_order(status: Any, records: Sequence[ScoreRecord]) -> dict[str, int]:
    order: dict[str, int] = {}
    if isinstance(status, JobStatus):
        order.update({c.candidate_id: i for i, c in enumerate(status.candidates)})
    for record in records:
        order.setdefault(record.candidate_id, len(order))
    return order
