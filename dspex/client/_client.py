"""``dspex.Client``: evaluate programs on the cluster, with the result local ``Evaluate`` gives.

    with dspex.Client("127.0.0.1:9092") as client, dspex.context(lm=lm):
        result = client.evaluate(program, devset, "exact_match:answer")
        result.score, result.results, result.usage

A submission publishes the programs (candidates topic), the job (jobs topic) and one task per
candidate and example (tasks topic); the client then follows the job's status, showing a progress
bar, and reads the job's per-example scores from the one scores partition its id hashes to.
Everything that can be refused (metric, examples, programs, LM settings, allow-lists) is checked
before anything is produced.

Outcomes, by the ``stop_reason`` the aggregator puts in the job's status (:mod:`dspex.client._stop`):
a ``completed`` job gives its results; a job stopped at ``max_errors`` or ``max_cost_usd`` gives
the partial results with ``stopped_early=True`` (as local Evaluate does at ``max_errors``); a
systemic failure (a bad key, an unknown model) raises what local Evaluate raises, which is a
:class:`~dspex.errors.JobError` too, whatever the limits; any other failure, a cancellation, or
``timeout`` passing raises JobError. Sync methods are thin wrappers of the async ones (``a``-prefixed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, TypedDict, Unpack, overload

from dspex._sync import run_sync
from dspex.client import _cluster, _optimize, _runs
from dspex.client._cluster import Follow
from dspex.client._publish import Positions, positions, positions_of, publish
from dspex.client._stop import job_error, stopped_early
from dspex.client._submit import Limits, Policy, Submission, build_submission
from dspex.client.results import evaluation_result
from dspex.dev.probe import probe_metadata
from dspex.errors import ConfigurationError, DspexError, JobError
from dspex.evaluate import EvaluationResult
from dspex.metrics import MetricLike
from dspex.primitives import Example, Module, Prediction
from dspex.schemas import Cancel, JobStatus, OptimizeStatus, Priority, ScoreRecord, WorkerHeartbeat
from dspex.schemas.base import utc_now
from dspex.streams.admin import GroupLag, KafkaAdmin
from dspex.streams.blobs import BlobSettings, BlobWriter
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry

__all__ = ["Client", "EvaluateOptions"]

logger = logging.getLogger(__name__)

Program = Module | Mapping[str, Any]

# Below the 10 s in which an unreachable broker must be reported.
CONNECT_TIMEOUT_S = 8.0
# Predictors whose last heartbeat is older than this do not count for a job's in-flight allowance.
ALLOWANCE_HEARTBEAT_AGE_S = 60.0


class EvaluateOptions(TypedDict, total=False):
    """The options of :meth:`Client.evaluate`, :meth:`~Client.aevaluate`, :meth:`~Client.evaluate_many`
    and :meth:`~Client.aevaluate_many`, all keywords, each optional (its default in brackets).

    ``name`` (None: one is made up): the job's name, shown with its status. ``failure_score`` (0.0):
    the score of an example whose program or metric failed. ``max_errors`` (None: no limit) and
    ``max_cost_usd`` (None: no limit): the job stops at more failed examples, or a higher cost, with
    partial results (``stopped_early``). ``priority`` (None: "normal"): "interactive", "normal" or
    "bulk", the job's share of the predictors. ``num_threads`` (None: as many as the predictors give
    it): how many of the job's examples may run at once in each predictor, DSPy's ``num_threads``
    (exactly so with one predictor); more than the live predictors allow is clamped to that, and the
    job's status says so (``note``). ``display_progress`` (True): a progress bar while
    waiting. ``timeout`` (None: no limit): seconds to wait before JobError (the job keeps running).
    """

    name: str | None
    failure_score: float
    max_errors: int | None
    max_cost_usd: float | None
    priority: Priority | None
    num_threads: int | None
    display_progress: bool
    timeout: float | None


@dataclass(frozen=True)
class _EvaluateCall:
    """One call of the evaluate methods: the job's limits and how to wait for it."""

    limits: Limits
    wait: bool = True
    display_progress: bool = True
    timeout: float | None = None

    @classmethod
    def of(cls, method: str, wait: bool, options: EvaluateOptions) -> _EvaluateCall:
        """The call of ``method(..., wait=wait, **options)``; TypeError for an unknown keyword, as a
        signature that listed the options would raise."""
        unknown = sorted(set(options) - EvaluateOptions.__optional_keys__)
        if unknown:
            raise TypeError(f"Client.{method}() got an unexpected keyword argument {unknown[0]!r}")
        limits = Limits(
            options.get("name"),
            options.get("failure_score", 0.0),
            options.get("max_errors"),
            options.get("max_cost_usd"),
            priority=options.get("priority"),
            num_threads=options.get("num_threads"),
        )
        return cls(limits, wait, options.get("display_progress", True), options.get("timeout"))


@dataclass(frozen=True)
class _Submitted:
    """A job this client submitted: what it needs to turn the job's scores into results."""

    submission: Submission
    where: Positions
    submitted_at: float


class Client:
    """A connection to a dspex cluster (a Kafka broker and the workers consuming from it)."""

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        prefix: str = "dspex.",
        kafka: KafkaSettings | None = None,
        allow_modules: Collection[str] | None = None,
        allow_api_bases: Collection[str] | None = None,
        allow_key_envs: Collection[str] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        blobs: BlobSettings | None = None,
    ) -> None:
        """``kafka`` carries security settings (SASL/SSL); ``bootstrap_servers`` alone is enough
        for a plain broker. Without ``kafka``, the ``DSPEX_KAFKA_*`` environment variables the
        workers read fill in the rest (``DSPEX_KAFKA_BOOTSTRAP`` when ``bootstrap_servers`` is None,
        then 127.0.0.1:9092; ``DSPEX_KAFKA_SASL_*``, ``DSPEX_KAFKA_SSL_*``). The ``allow_*`` lists
        refuse at submit time what workers started with the same lists would refuse (None: no
        check). ``blobs``: when example values travel through the blobs topic and how large they may
        be (:class:`~dspex.streams.blobs.BlobSettings`; default: over 256 KiB, at most 64 MiB)."""
        self.settings = _settings(bootstrap_servers, kafka)
        self.registry = TopicRegistry(prefix)
        self.policy = Policy(allow_modules, allow_api_bases, allow_key_envs)
        self.connect_timeout = connect_timeout
        self._admin = KafkaAdmin(self.settings, timeout=connect_timeout)
        self._producer: AsyncProducer | None = None
        self._connected = False
        self._topics_ready = False
        self._submitted: dict[str, _Submitted] = {}
        self.blob_settings = blobs or BlobSettings()
        self._blobs = BlobWriter(self.blob_settings)

    def __repr__(self) -> str:
        return f"Client({self.settings.bootstrap_servers!r}, prefix={self.registry.prefix!r})"

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def close(self) -> None:
        """Flush what is still queued and release the connections."""
        run_sync(self.aclose())

    async def aclose(self) -> None:
        """Async form of :meth:`close`."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.aclose()
        await asyncio.to_thread(self._admin.close)  # its committed-offset readers

    # -- evaluation --------------------------------------------------------------------------------

    @overload
    def evaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[True] = True, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult: ...  # fmt: skip
    @overload
    def evaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[False], **options: Unpack[EvaluateOptions],
    ) -> str: ...  # fmt: skip
    @overload
    def evaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: bool, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult | str: ...  # fmt: skip
    def evaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: bool = True, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult | str:  # fmt: skip
        """Evaluate ``program`` on ``devset`` with ``metric`` through the cluster.

        ``metric``: a metric object (``dspex.metrics.exact_match("answer")``), its name
        (``"exact_match:answer"``) or an import path (``"mypkg.metrics:judge"``). The job stops at
        more than ``max_errors`` failed examples or a cost over ``max_cost_usd`` (partial results,
        ``stopped_early``). ``priority`` ("interactive", "normal" or "bulk"; None: normal) weighs the
        job against the others the predictors run: every job gets a share of them whatever its size,
        interactive ones a larger one (ConfigurationError for another name). A systemic error (a bad
        key) raises as local Evaluate does, whatever the limits. ``timeout`` (seconds, None for no
        limit) bounds the wait. Returns an EvaluationResult, or the job id with ``wait=False``.
        The options (keywords): :class:`EvaluateOptions`.

            >>> with dspex.Client("127.0.0.1:9092") as client, dspex.context(lm=lm):  # doctest: +SKIP
            ...     result = client.evaluate(qa, devset, "exact_match:answer")
        """
        call = _EvaluateCall.of("evaluate", wait, options)
        return run_sync(self._aevaluate_one(program, devset, metric, call))

    @overload
    async def aevaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[True] = True, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult: ...  # fmt: skip
    @overload
    async def aevaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[False], **options: Unpack[EvaluateOptions],
    ) -> str: ...  # fmt: skip
    @overload
    async def aevaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: bool, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult | str: ...  # fmt: skip
    async def aevaluate(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, *,
        wait: bool = True, **options: Unpack[EvaluateOptions],
    ) -> EvaluationResult | str:  # fmt: skip
        """Async form of :meth:`evaluate`."""
        return await self._aevaluate_one(
            program, devset, metric, _EvaluateCall.of("aevaluate", wait, options)
        )

    @overload
    def evaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[True] = True, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult]: ...  # fmt: skip
    @overload
    def evaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[False], **options: Unpack[EvaluateOptions],
    ) -> str: ...  # fmt: skip
    @overload
    def evaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: bool, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult] | str: ...  # fmt: skip
    def evaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: bool = True, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult] | str:  # fmt: skip
        """Evaluate several programs as ONE job, all their tasks at once: one result per program, in
        the order given (or the job id with ``wait=False``). Options as :meth:`evaluate`."""
        call = _EvaluateCall.of("evaluate_many", wait, options)
        return run_sync(self._aevaluate(programs, devset, metric, call))

    @overload
    async def aevaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[True] = True, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult]: ...  # fmt: skip
    @overload
    async def aevaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: Literal[False], **options: Unpack[EvaluateOptions],
    ) -> str: ...  # fmt: skip
    @overload
    async def aevaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: bool, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult] | str: ...  # fmt: skip
    async def aevaluate_many(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, *,
        wait: bool = True, **options: Unpack[EvaluateOptions],
    ) -> list[EvaluationResult] | str:  # fmt: skip
        """Async form of :meth:`evaluate_many`."""
        return await self._aevaluate(
            programs, devset, metric, _EvaluateCall.of("aevaluate_many", wait, options)
        )

    async def arun(
        self,
        candidates: Sequence[Program],
        examples: Sequence[Example],
        metric: MetricLike,
        *,
        name: str | None = None,
        failure_score: float = 0.0,
        max_errors: int | None = None,
        max_cost_usd: float | None = None,
        display_progress: bool = False,
        timeout: float | None = None,
        parent_job_id: str | None = None,
    ) -> list[EvaluationResult]:
        """Run candidates x examples as one job; one result per candidate, in the order given.

        The operation optimizers call on an executor: no progress bar unless asked for.
        ``parent_job_id``: the optimization this evaluation is part of (shown with the job).
        """
        limits = Limits(name, failure_score, max_errors, max_cost_usd, parent_job_id=parent_job_id)
        submitted = await self._asubmit(candidates, examples, metric, limits)
        try:
            async with self._cancelled_with_caller([submitted]):
                return await self._aoutcome(submitted, display_progress=display_progress, timeout=timeout)
        finally:
            # Read once, right away: an optimizer's many evaluations are not kept for collect().
            self._submitted.pop(submitted.submission.job.job_id, None)

    def predict(
        self,
        program: Module | Sequence[Module],
        examples: Sequence[Example],
        *,
        name: str | None = None,
        timeout: float | None = None,
        parent_job_id: str | None = None,
    ) -> list[Prediction | Exception]:
        """Run ``program`` (or one program per example) on each example through the cluster: the
        predictions with their traces and usage, or the exception each run raised, in example order.
        See :meth:`apredict`."""
        return run_sync(
            self.apredict(program, examples, name=name, timeout=timeout, parent_job_id=parent_job_id)
        )

    async def apredict(
        self,
        program: Module | Sequence[Module],
        examples: Sequence[Example],
        *,
        name: str | None = None,
        timeout: float | None = None,
        parent_job_id: str | None = None,
    ) -> list[Prediction | Exception]:
        """Async form of :meth:`predict` (the executor operation "run a program over examples").

        Each distinct program is one job over its examples; all are published at once and followed
        together. A job that fails as a whole (a systemic error: a bad key, a program the workers
        cannot build), is cancelled, or outlasts ``timeout`` raises JobError.
        """
        groups = _runs.group_by_program(program, len(examples))
        limits = Limits(name or "runs", parent_job_id=parent_job_id)
        submissions = [
            build_submission(
                [group.program], _runs.examples_at(examples, group.positions), _runs.RUN_METRIC,
                policy=self.policy, limits=limits, blob_settings=self.blob_settings,
            )
            for group in groups
        ]  # fmt: skip
        if not submissions:
            return []
        submitted = await self._asubmit_all(submissions)
        async with self._cancelled_with_caller(submitted):
            results = await self._aoutcomes(submitted, timeout=timeout)
        found: dict[int, Prediction | Exception] = {}
        for group, records in zip(groups, results, strict=True):
            by_index = {record.example_index: record for record in records}
            for index, position in enumerate(group.positions):
                found[position] = _runs.prediction_of(by_index.get(index), group.program)
        return [found[position] for position in range(len(examples))]

    async def _aevaluate_one(
        self, program: Program, devset: Sequence[Example], metric: MetricLike, call: _EvaluateCall
    ) -> EvaluationResult | str:
        outcome = await self._aevaluate([program], devset, metric, call)
        return outcome if isinstance(outcome, str) else outcome[0]

    async def _aevaluate(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, call: _EvaluateCall
    ) -> list[EvaluationResult] | str:
        submitted = await self._asubmit(programs, devset, metric, call.limits)
        if not call.wait:
            return submitted.submission.job.job_id
        return await self._aoutcome(submitted, display_progress=call.display_progress, timeout=call.timeout)

    # -- optimization ------------------------------------------------------------------------------

    @overload
    def optimize(
        self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
        metric: MetricLike, *, wait: Literal[True] = True, **options: Any,
    ) -> Module: ...  # fmt: skip
    @overload
    def optimize(
        self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
        metric: MetricLike, *, wait: Literal[False], **options: Any,
    ) -> str: ...  # fmt: skip
    @overload
    def optimize(
        self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
        metric: MetricLike, *, wait: bool, **options: Any,
    ) -> Module | str: ...  # fmt: skip
    def optimize(self, program: Program, trainset: Sequence[Example], valset: Sequence[Example] | None,
                 metric: MetricLike, *, wait: bool = True, **options: Any) -> Module | str:  # fmt: skip
        """Optimize ``program`` on the cluster (``dspex worker optimize``); returns the best program,
        or the job id with ``wait=False``. Options: see :meth:`aoptimize`."""
        return run_sync(self.aoptimize(program, trainset, valset, metric, wait=wait, **options))

    async def aoptimize(
        self,
        program: Program,
        trainset: Sequence[Example],
        valset: Sequence[Example] | None,
        metric: MetricLike,
        *,
        optimizer: str = "bootstrap-rs",
        knobs: Mapping[str, Any] | None = None,
        compile_options: Mapping[str, Any] | None = None,
        wait: bool = True,
        timeout: float | None = None,
        display_progress: bool = False,
        **limits: Any,
    ) -> Module | str:
        """Async form of :meth:`optimize`. ``knobs`` go to the optimizer's constructor,
        ``compile_options`` to its compile (MIPROv2's ``num_trials``, ``minibatch_size``, ...).
        ``limits``: name, seed, max_lm_calls, max_cost_usd, max_errors. JobError when the
        optimization fails, is cancelled or outlasts ``timeout``."""
        options = dict(compile_options or {})
        request = _optimize.OptimizeRequest(
            program, trainset, valset, metric, optimizer, dict(knobs or {}), options, **limits
        )
        spec, job = _optimize.build_optimize_job(request, self.policy)
        await self._aready(create_topics=True)
        await _optimize.submit_optimize(self._get_producer(), self.registry, spec, job)
        if not wait:
            return job.job_id
        status = await _optimize.wait_optimize(
            self.settings, self.registry, job.job_id, timeout=timeout, display_progress=display_progress
        )
        return await _optimize.fetch_program(
            self.settings, self.registry, status, allow_modules=self.policy.allow_modules
        )

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
    async def _cancelled_with_caller(self, submitted: Sequence[_Submitted]) -> AsyncIterator[None]:
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

    def collect(self, job_id: str) -> list[EvaluationResult]:
        """The results of a finished job, one per candidate (for a job submitted with ``wait=False``)."""
        return run_sync(self.acollect(job_id))

    async def acollect(self, job_id: str) -> list[EvaluationResult]:
        """Async form of :meth:`collect`."""
        known = self._submitted.get(job_id)
        if known is not None:
            return await self._aoutcome(known, display_progress=False, timeout=None)
        status = await self.astatus(job_id)
        if not isinstance(status, JobStatus):
            raise JobError(f"no evaluation job {job_id} on {self.registry.name('status')}", job_id=job_id)
        records = await self.aresults(job_id)
        # A job still running gives what is there so far; a finished one ends as a waited-for one
        # (its limits unknown here: a status without stop_reason that failed raises).
        stopped = stopped_early(status, records) if status.finished else True
        totals = {c.candidate_id: c.total for c in status.candidates}
        return [
            evaluation_result(cid, records, None, total=total, metric="score", stopped_early=stopped)
            for cid, total in totals.items()
        ]

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

    # -- internals ---------------------------------------------------------------------------------

    async def _aready(self, *, create_topics: bool) -> None:
        if not self._connected:
            # A TCP connect first: an address where nothing listens fails at once, not after the timeout.
            await asyncio.to_thread(
                probe_metadata,
                self.settings.bootstrap_servers,
                config=self.settings.confluent(),
                timeout=self.connect_timeout,
            )
            self._connected = True
        if create_topics and not self._topics_ready:
            await asyncio.to_thread(self._admin.ensure_topics, self.registry)
            self._topics_ready = True

    def _get_producer(self) -> AsyncProducer:
        if self._producer is None:
            self._producer = AsyncProducer(self.settings)
        return self._producer

    async def _asubmit(
        self, programs: Sequence[Program], devset: Sequence[Example], metric: MetricLike, limits: Limits
    ) -> _Submitted:
        if limits.num_threads is not None:  # clamped to what the live predictors allow
            limits = replace(limits, in_flight_allowance=await self._ain_flight_allowance())
        blobs = self.blob_settings
        submission = build_submission(
            list(programs), devset, metric, policy=self.policy, limits=limits, blob_settings=blobs
        )
        await self._aready(create_topics=True)
        where = await asyncio.to_thread(positions, self._admin, self.registry, submission.job.job_id)
        await publish(self._get_producer(), self.registry, submission, self._blobs)
        submitted = _Submitted(submission, where, time.perf_counter())
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

    async def _asubmit_all(self, submissions: Sequence[Submission]) -> list[_Submitted]:
        """Publish several jobs at once (each one's programs, job and tasks in order)."""
        await self._aready(create_topics=True)
        job_ids = [submission.job.job_id for submission in submissions]
        where = await asyncio.to_thread(positions_of, self._admin, self.registry, job_ids)
        producer = self._get_producer()
        await asyncio.gather(*(publish(producer, self.registry, s, self._blobs) for s in submissions))
        now = time.perf_counter()
        # Not kept in self._submitted: an optimizer makes many of these, read once, right away.
        submitted = [_Submitted(s, w, now) for s, w in zip(submissions, where, strict=True)]
        logger.info(
            "submitted %d job(s) of %d task(s)", len(submitted), sum(s.job.total_tasks for s in submissions)
        )
        return submitted

    async def _aoutcomes(
        self, submitted: Sequence[_Submitted], *, timeout: float | None
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
        self, submitted: _Submitted, *, display_progress: bool, timeout: float | None
    ) -> list[EvaluationResult]:
        job = submitted.submission.job
        follow = Follow(
            job.job_id,
            partition=submitted.where.status_partition,
            start=submitted.where.status_start,
            total=job.total_tasks,
            display_progress=display_progress,
            timeout=timeout,
            label=job.name,
        )
        where = submitted.where
        tail = _cluster.ScoreTail(
            self.settings, self.registry, job.job_id, where.scores_partition, where.scores_start
        ).start()
        try:
            status = await _cluster.follow_status(self.settings, self.registry, follow)
        except BaseException:
            await tail.cancel()
            raise
        if not isinstance(status, JobStatus):  # an evaluation's id never carries an optimization's status
            raise JobError(
                f"job {job.job_id} has a {status.kind} status, not an evaluation's", job_id=job.job_id
            )
        records = await tail.finish(status)
        stopped = stopped_early(status, records, max_errors=job.max_errors, max_cost_usd=job.max_cost_usd)
        elapsed = time.perf_counter() - submitted.submitted_at
        sub = submitted.submission
        return [
            evaluation_result(
                cid,
                records,
                sub.examples,
                total=job.num_examples,
                metric=sub.metric,
                stopped_early=stopped,
                elapsed_s=elapsed,
            )
            for cid in sub.program_ids
        ]


async def _next_batch(batches: AsyncGenerator[list[ScoreRecord], None]) -> list[ScoreRecord]:
    return await anext(batches)


def _settings(bootstrap_servers: str | None, kafka: KafkaSettings | None) -> KafkaSettings:
    if kafka is None:
        # As the workers do: DSPEX_KAFKA_* (bootstrap, SASL, SSL) fill what the caller did not give;
        # a wrong value is a one-line ConfigurationError naming the variable (from_env).
        return KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap_servers)
    if bootstrap_servers is not None and bootstrap_servers != kafka.bootstrap_servers:
        raise ConfigurationError(
            f"bootstrap_servers={bootstrap_servers!r} disagrees with kafka.bootstrap_servers="
            f"{kafka.bootstrap_servers!r}; pass one of them"
        )
    return kafka


def _candidate_order(status: Any, records: Sequence[ScoreRecord]) -> dict[str, int]:
    order: dict[str, int] = {}
    if isinstance(status, JobStatus):
        order.update({c.candidate_id: i for i, c in enumerate(status.candidates)})
    for record in records:
        order.setdefault(record.candidate_id, len(order))
    return order
