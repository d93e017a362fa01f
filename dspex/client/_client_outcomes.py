"""Submitting evaluation jobs from a :class:`dspex.Client` and turning their scores into results.

One layer of :class:`dspex.Client`; :mod:`dspex.client._client` lists them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from dspex.client import _cluster
from dspex.client._client_base import Program, Submitted
from dspex.client._client_jobs import JobsClient
from dspex.client._cluster import Follow
from dspex.client._collector import collector_paused
from dspex.client._publish import positions, positions_of, publish
from dspex.client._stop import job_error, stopped_early
from dspex.client._submit import Limits, Submission, build_submission
from dspex.client.results import evaluation_result
from dspex.errors import JobError
from dspex.evaluate import EvaluationResult
from dspex.metrics import MetricLike
from dspex.primitives import Example
from dspex.schemas import JobStatus, ScoreRecord
from dspex.schemas.base import utc_now
from dspex.tracking import alog_submission, evaluation_progress

__all__ = ["ALLOWANCE_HEARTBEAT_AGE_S", "SubmittingClient"]

# One logger for the whole client, whichever of its modules writes the line.
logger = logging.getLogger("dspex.client._client")

# Predictors whose last heartbeat is older than this do not count for a job's in-flight allowance.
ALLOWANCE_HEARTBEAT_AGE_S = 60.0


class SubmittingClient(JobsClient):
    """A client's evaluation jobs: publish them, follow them, read their results."""

    async def _asubmit(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, limits: Limits
    ) -> Submitted:
        if limits.num_threads is not None:  # clamped to what the live predictors allow
            limits = replace(limits, in_flight_allowance=await self._ain_flight_allowance())
        blobs = self.blob_settings
        with collector_paused():  # a row per example, kept until the job ends: dspex.client._collector
            submission = build_submission(
                list(programs), devset, metric, policy=self.policy, limits=limits, blob_settings=blobs
            )
        await self._aready(create_topics=True)
        where, producer = await asyncio.gather(
            asyncio.to_thread(positions, self._admin, self.registry, submission.job.job_id), self._aproducer()
        )
        await publish(producer, self.registry, submission, self._blobs)
        submitted = Submitted(submission, where, time.perf_counter())
        self._submitted[submission.job.job_id] = submitted
        logger.info(
            "submitted job %s: %d candidate(s) x %d example(s)",
            submission.job.job_id,
            len(submission.job.candidate_ids),
            submission.job.num_examples,
        )
        return submitted

    async def _ain_flight_allowance(self) -> int | None:
        """The most tasks of one job a live predictor runs at once (None: no predictor says)."""
        fresh_after = utc_now() - timedelta(seconds=ALLOWANCE_HEARTBEAT_AGE_S)
        beats = await self.aworkers()
        allowed = [
            b.concurrency for b in beats if b.kind == "predict" and b.concurrency and b.sent_at >= fresh_after
        ]
        return max(allowed) if allowed else None

    async def _asubmit_all(self, submissions: Sequence[Submission]) -> list[Submitted]:
        """Publish several jobs at once (each one's programs, job and tasks in order)."""
        await self._aready(create_topics=True)
        job_ids = [submission.job.job_id for submission in submissions]
        where, producer = await asyncio.gather(
            asyncio.to_thread(positions_of, self._admin, self.registry, job_ids), self._aproducer()
        )
        await asyncio.gather(*(publish(producer, self.registry, s, self._blobs) for s in submissions))
        now = time.perf_counter()
        # Not kept in self._submitted: an optimizer makes many of these, read once, right away.
        submitted = [Submitted(s, w, now) for s, w in zip(submissions, where, strict=True)]
        logger.info(
            "submitted %d job(s) of %d task(s)", len(submitted), sum(s.job.total_tasks for s in submissions)
        )
        return submitted

    async def _aoutcomes(
        self, submitted: Sequence[Submitted], *, timeout: float | None
    ) -> list[list[ScoreRecord]]:
        """The score records of several jobs, once all are terminal (JobError unless all completed:
        for a systemic failure, the error a local run raises, as :func:`stopped_early` builds it)."""
        follows = [
            Follow(s.submission.job.job_id, s.where.status_partition, s.where.status_start) for s in submitted
        ]
        statuses = await _cluster.follow_statuses(self.settings, self.registry, follows, timeout=timeout)
        reads = [
            (Follow(f.job_id, s.where.scores_partition, s.where.scores_start), statuses[f.job_id])
            for f, s in zip(follows, submitted, strict=True)
        ]
        records = await _cluster.read_scores_of(self.settings, self.registry, reads)
        for follow in follows:
            if stopped_early(statuses[follow.job_id], records[follow.job_id]):  # these jobs set no limits
                raise job_error(statuses[follow.job_id])
        return [records[s.submission.job.job_id] for s in submitted]

    async def _aoutcome(
        self, submitted: Submitted, *, display_progress: bool, timeout: float | None
    ) -> list[EvaluationResult]:
        job = submitted.submission.job
        # with MLflow on: the running score, cost and tokens become steps of the run as it goes
        progress = evaluation_progress(submitted.submission, submitted.submitted_at)
        follow = Follow(
            job.job_id,
            partition=submitted.where.status_partition,
            start=submitted.where.status_start,
            total=job.total_tasks,
            display_progress=display_progress,
            timeout=timeout,
            label=job.name,
            on_status=progress,
        )
        where = submitted.where
        tail = _cluster.ScoreTail(
            self.settings, self.registry, job.job_id, where.scores_partition, where.scores_start
        ).start()
        try:
            status = await _cluster.follow_status(self.settings, self.registry, follow)
        except BaseException:
            await tail.cancel()
            if progress is not None:
                progress.abandon()
            raise
        if not isinstance(status, JobStatus):  # an evaluation's id never carries an optimization's status
            raise JobError(
                f"job {job.job_id} has a {status.kind} status, not an evaluation's", job_id=job.job_id
            )
        records = await tail.finish(status)
        if status.unreported_note is not None:  # the result's usage lacks those calls: say so
            logger.warning("job %s: %s", job.job_id, status.unreported_note)
        stopped = stopped_early(status, records, max_errors=job.max_errors, max_cost_usd=job.max_cost_usd)
        elapsed = time.perf_counter() - submitted.submitted_at
        sub = submitted.submission
        with collector_paused():  # thousands of acyclic objects: see dspex.client._collector
            results = [
                evaluation_result(
                    cid,
                    records,
                    sub.examples,
                    total=job.num_examples,
                    metric=sub.metric,
                    stopped_early=stopped,
                    elapsed_s=elapsed,
                    field_types=sub.field_types.get(cid),
                )
                for cid in sub.program_ids
            ]
        await alog_submission(sub, results, progress)  # MLflow runs, when dspex.configure(mlflow=...) is on
        return results
