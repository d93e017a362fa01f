"""What the predictor and the scorer share: options, error records, and the worker lifespan.

A worker is one consumer-group member (:class:`~dspex.streams.consumer.ConsumerRuntime`) with the
things around it, started and stopped in order by :meth:`Worker.run`:

    start:  topics exist -> producer -> job cache (+ the kind's own caches) -> /metrics -> heartbeat
    run:    consume until SIGTERM / SIGINT / :meth:`Worker.request_stop`
    drain:  running handlers get ``drain_timeout`` s to finish; what is done is committed
    stop:   heartbeat -> /metrics (target file removed) -> caches -> producer flushed -> LM clients

Every message a worker dead-letters whose headers name a job is also accounted to that job: an
error :class:`~dspex.schemas.ScoreRecord` (source "dlq") goes straight to the scores topic, so the
job still completes and reports it.

LM flow control (:mod:`dspex.processors.endpoints`): every LM endpoint has an adaptive limiter and
a circuit breaker. While no breaker is closed (every endpoint in use is down) the worker pauses all
its partitions (tasks wait in Kafka; running ones wait for the breaker inside their LM call) and
resumes them once one closes; while only some endpoints are down, work goes on and the calls to a
dead endpoint wait on its breaker. The heartbeat carries the smallest limit and the worst breaker
state, and is sent at once on every breaker change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager, AsyncExitStack
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar, Literal

from confluent_kafka import Message
from pydantic import BaseModel

from dspex.configuration import context, current_settings
from dspex.errors import ConfigurationError, LMError, ProgramLoadError
from dspex.lm.breaker import BreakerState
from dspex.observability.health import consumer_readiness
from dspex.observability.metrics import (
    HANDLER_DURATION,
    MESSAGES_CONSUMED,
    MESSAGES_PRODUCED,
    TASKS_IN_FLIGHT,
    child,
    prepare_worker,
)
from dspex.observability.server import DEFAULT_METRICS_HOST, DEFAULT_TARGETS_DIR, MetricsServer
from dspex.processors.callbacks import check_callback_path, worker_callbacks
from dspex.processors.endpoints import EndpointOptions, Endpoints
from dspex.processors.heartbeat import HEARTBEAT_INTERVAL_S, HeartbeatPublisher
from dspex.processors.jobcache import JobCache
from dspex.processors.lms import LMPool
from dspex.processors.security import SecurityPolicy
from dspex.processors.stopping import StopGuard
from dspex.schemas.base import utc_now
from dspex.schemas.common import ErrorInfo
from dspex.schemas.dlq import DLQ_REASON_SECURITY_POLICY, DeadLetter
from dspex.schemas.results import SCORE_SOURCE_DLQ, ScoreRecord
from dspex.schemas.submit import DEFAULT_TASKS_TIMEOUT_S
from dspex.schemas.tasks import task_id_for
from dspex.schemas.workers import WorkerHeartbeat, WorkerKind
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.consumer import ConsumerOptions, ConsumerRuntime
from dspex.streams.identity import process_id
from dspex.streams.producer import STREAMING_LINGER_MS, AsyncProducer
from dspex.streams.serde import to_record
from dspex.streams.topics import ROLES, TopicRegistry, TopicRole

__all__ = [
    "DLQ_REASON_UNKNOWN_JOB",
    "DLQ_REASON_UNKNOWN_METRIC",
    "RUNTIME_HOOKS",
    "SYSTEMIC_DLQ_REASONS",
    "Outcome",
    "Worker",
    "WorkerOptions",
    "default_worker_id",
    "dspex_version",
    "ensure_worker_topics",
    "error_info",
]

logger = logging.getLogger(__name__)

DLQ_REASON_UNKNOWN_JOB = "unknown_job"  # a prediction whose job never appeared on the jobs topic
DLQ_REASON_UNKNOWN_METRIC = "unknown_metric"  # a job whose metric cannot be found or built
# Dead-letter reasons that every task of the job will hit alike: the job fails as a whole.
SYSTEMIC_DLQ_REASONS = frozenset({DLQ_REASON_SECURITY_POLICY, DLQ_REASON_UNKNOWN_METRIC})

Outcome = Literal["ok", "skipped"]
_TRIMMED_MESSAGE = 2000
# What a kind's runtime_options() may add besides ConsumerOptions fields: the runtime's collaborators.
RUNTIME_HOOKS = ("backlog", "dispatch_limit")
# Seconds running handlers get on SIGTERM: with the commit and the close, within the stop deadline.
SHUTDOWN_DRAIN_S = 5.0


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker runs (the CLI builds it from its flags).

    ``metrics_port`` None picks a free port in 9400-9499; ``metrics`` False serves none (tests).
    ``lm_cache_dir`` None keeps the LM response cache off, so every task is answered by the LM.
    ``callbacks``: user callbacks by import path (``--callback pkg.mod:Name``), installed in every
    program the worker runs; a predictor stores their events in each prediction's result.
    ``sandbox_pool``: warm code sandboxes of a predictor (``--sandbox-pool``); 0 runs no code.
    ``allow_media_fetch``: whether programs a predictor runs may download image/audio/file URLs.
    ``record_lm_calls``: whether a predictor keeps each task's LM calls (messages, completion,
    usage) in its result, bounded (:mod:`dspex.processors.lm_calls`).
    ``inline_builtin_metrics``: whether a predictor scores the predictions of jobs with a built-in
    metric itself, straight to the scores topic (:mod:`dspex.processors.inline_score`).
    ``tasks_timeout``: seconds after which an intake worker fails an evaluation with nothing done.
    """

    prefix: str = "dspex."
    worker_id: str | None = None
    # The predictor's default (``dspex worker predict``); the CLI passes its own for the other kinds.
    concurrency: int = 1024
    policy: SecurityPolicy = field(default_factory=SecurityPolicy)
    fast_groups: bool = False
    drain_timeout: float = 10.0
    candidate_wait_s: float = 10.0
    job_wait_s: float = 10.0
    heartbeat_interval: float = HEARTBEAT_INTERVAL_S
    lm_cache_dir: Path | None = None
    metrics: bool = True
    metrics_host: str = DEFAULT_METRICS_HOST
    metrics_port: int | None = None
    targets_dir: Path | None = DEFAULT_TARGETS_DIR
    endpoints: EndpointOptions = field(default_factory=EndpointOptions)
    callbacks: tuple[str, ...] = ()
    sandbox_pool: int = 0
    allow_media_fetch: bool = False
    record_lm_calls: bool = True
    inline_builtin_metrics: bool = True
    tasks_timeout: float = DEFAULT_TASKS_TIMEOUT_S
    # the provider-batch worker's (dspex.processors.provider_batch.ProviderBatchOptions)
    batch_window: float = 5.0
    batch_poll: float = 30.0
    batch_max_requests: int = 50_000
    batch_max_bytes: int = 200 * 1024 * 1024
    batch_max_tries: int = 3
    batch_retry: str = "batch"  # or "online": unanswered batch requests go to the online endpoint

    def consumer_options(self, **options: Any) -> ConsumerOptions:
        """The worker's consumer options: ``--concurrency`` in flight, its drain and group timing.

        ``options`` names the group and topics and may override any of them.
        """
        worker = {
            "max_in_flight": self.concurrency,
            "drain_timeout": self.drain_timeout,
            "fast_groups": self.fast_groups,
        }
        return ConsumerOptions(**{**worker, **options})

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.sandbox_pool < 0:
            raise ConfigurationError(f"--sandbox-pool must be >= 0, got {self.sandbox_pool}")
        for path in self.callbacks:
            check_callback_path(path)


def default_worker_id(kind: str) -> str:
    """``<kind>-<host>-<pid>-<token>``: unique per process and kind even where replicas share
    hostname and pid (see :mod:`dspex.streams.identity`), readable in ``dspex status``."""
    return f"{kind}-{process_id()}"


def ensure_worker_topics(settings: KafkaSettings, prefix: str) -> TopicRegistry:
    """Create the pipeline's missing topics (default sizes); existing ones are used as they are."""
    admin = KafkaAdmin(settings)
    names = {role: prefix + role for role in ROLES}
    existing = admin.partition_counts(names.values())
    registry = TopicRegistry(prefix, partitions={r: existing[n] for r, n in names.items() if n in existing})
    admin.ensure_topics(registry)
    return registry


def error_info(exc: BaseException, *, message: str | None = None) -> ErrorInfo:
    """An ErrorInfo for ``exc``: systemic when every task of the job would fail the same way."""
    systemic = isinstance(exc, ConfigurationError | ProgramLoadError) or (
        isinstance(exc, LMError) and exc.systemic
    )
    text = message if message is not None else str(exc) or type(exc).__name__
    return ErrorInfo(
        type=type(exc).__name__,
        message=_trim(text),
        status=exc.status if isinstance(exc, LMError) else None,
        systemic=systemic,
    )


def _trim(text: str, limit: int = _TRIMMED_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 15] + " ... (trimmed)"


class Worker(ABC):
    """A processor's lifespan around a ConsumerRuntime (see the module docs)."""

    kind: ClassVar[WorkerKind]
    input_role: ClassVar[TopicRole]
    input_model: ClassVar[type[BaseModel]]

    def __init__(self, settings: KafkaSettings, options: WorkerOptions | None = None) -> None:
        self.options = options or WorkerOptions()
        self.registry = TopicRegistry(self.options.prefix)
        self.worker_id = self.options.worker_id or default_worker_id(self.kind)
        self.settings = settings.for_worker(self.kind, self.worker_id)
        self.group_id = f"{self.options.prefix}{self.kind}"
        self.endpoints = Endpoints(self.options.endpoints, max_limit=self.options.concurrency)
        self.endpoints.add_listener(self._breaker_changed)
        self.lms = LMPool(self.options.policy, cache_dir=self.options.lm_cache_dir, endpoints=self.endpoints)
        # what run() installs in the programs it runs: the LM metrics, the user's (_with_callbacks)
        self.callbacks: list[Any] = []
        self.runtime: ConsumerRuntime | None = None
        self.heartbeats: HeartbeatPublisher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hold_task: asyncio.Task[None] | None = None
        self.producer: AsyncProducer | None = None
        self.jobs: JobCache | None = None
        self.metrics_server: MetricsServer | None = None
        self._started_at = utc_now()
        self._stop_requested = False
        self._runtime_created = asyncio.Event()

    # ---------------------------------------------------------------- lifespan

    async def run(self) -> None:
        """Start, consume until asked to stop, drain, and stop everything in reverse order."""
        async with AsyncExitStack() as stack:
            stack.enter_context(self._with_callbacks())
            runtime = await self._start(stack)
            logger.info(
                "%s worker %s in group %s; %s",
                self.kind,
                self.worker_id,
                self.group_id,
                self.options.policy.describe(),
            )
            await runtime.run()

    def request_stop(self) -> None:
        """Drain and stop (safe from a signal handler)."""
        self._stop_requested = True
        if self.runtime is not None:
            self.runtime.request_stop()

    def install_signal_handlers(
        self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Make SIGTERM and SIGINT drain and stop this worker (call from the running loop).

        The process exits within :data:`~dspex.processors.stopping.STOP_DEADLINE_S` of the first
        signal whatever it waits for (a broker that is gone included), at once on a second one.
        """
        guard = StopGuard(self.worker_id, request_stop=self.request_stop, left_undone=self.left_undone)
        guard.install(asyncio.get_running_loop(), signals)

    def left_undone(self) -> str:
        """What stopping now would leave undone (logged when a stop has to be forced)."""
        if self.runtime is None:
            return "the worker had not started consuming; nothing to commit"
        return self.runtime.describe_undone()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the worker owns partitions of its input topic (TimeoutError after ``timeout``)."""
        await asyncio.wait_for(self._runtime_created.wait(), timeout)
        if self.runtime is not None:
            await self.runtime.wait_assigned(timeout)

    def _with_callbacks(self) -> AbstractContextManager[Any]:
        # The handlers' tasks start inside run() and inherit this context: every program the worker
        # runs reports to these callbacks (on top of any configured process-wide). The LM metrics
        # are one of them: the programming model records none itself.
        self.callbacks = worker_callbacks(self.options.callbacks, self.options.policy)
        return context(callbacks=[*current_settings().callbacks, *self.callbacks])

    async def _start(self, stack: AsyncExitStack) -> ConsumerRuntime:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(ensure_worker_topics, self.settings, self.options.prefix)
        streaming = {"linger.ms": STREAMING_LINGER_MS}  # a steady stream of results: see the constant
        self.producer = await stack.enter_async_context(AsyncProducer(self.settings, config=streaming))
        stack.push_async_callback(self.lms.aclose)
        self.jobs = await stack.enter_async_context(JobCache(self.settings, self.registry))
        await self._catch_up(self.jobs)
        await self.open_caches(stack)
        if self.options.metrics:
            # Series at 0 before the first message, so dashboards and rates see them from the start.
            prepare_worker(self.kind, [self.registry.name(self.input_role)], [])
            self.metrics_server = stack.enter_context(self._metrics_server())
        heartbeat = HeartbeatPublisher(
            self.producer, self.registry.name("workers"), self.heartbeat, self.options.heartbeat_interval
        )
        self.heartbeats = await stack.enter_async_context(heartbeat)
        self.runtime = self._runtime(self.producer)
        self._runtime_created.set()
        if self._stop_requested:
            self.runtime.request_stop()
        return self.runtime

    async def _catch_up(self, jobs: JobCache) -> None:
        # Read the jobs and states already published before the first task, so that a task of a
        # job cancelled before this worker started is skipped rather than run.
        try:
            await jobs.wait_caught_up(self.options.job_wait_s)
        except TimeoutError:
            logger.warning(
                "the job cache did not catch up in %.0f s; starting anyway", self.options.job_wait_s
            )

    def _metrics_server(self) -> MetricsServer:
        server = MetricsServer(
            kind=self.kind,
            worker_id=self.worker_id,
            host=self.options.metrics_host,
            port=self.options.metrics_port,
            targets_dir=self.options.targets_dir,
            labels={"prefix": self.options.prefix},
        )
        # /healthz: this loop answers; /readyz: Kafka answers and this member is in its group
        server.health.attach(
            asyncio.get_running_loop(), ready=lambda: consumer_readiness(self.runtime, self.group_id)
        )
        return server

    def _runtime(self, producer: AsyncProducer) -> ConsumerRuntime:
        runtime = self._new_runtime(producer)
        # the drain on stop leaves room under the stop deadline for the last commit and the close
        runtime.shutdown_drain_timeout = min(self.options.drain_timeout, SHUTDOWN_DRAIN_S)
        return runtime

    def _new_runtime(self, producer: AsyncProducer) -> ConsumerRuntime:
        tuning = self.runtime_options()
        hooks = {name: tuning.pop(name) for name in RUNTIME_HOOKS if name in tuning}
        options = self.options.consumer_options(
            group_id=self.group_id,
            topics=[self.registry.name(self.input_role)],
            dlq_topic=self.registry.name("dlq"),
            worker_id=self.worker_id,
            **tuning,
        )
        return ConsumerRuntime(
            self.settings,
            options,
            handler=self._handle,
            producer=producer,
            decoder=self.input_model,
            on_dead_letter=self._account_dead_letter,
            **hooks,
        )

    def runtime_options(self) -> dict[str, Any]:
        """The kind's backlog tuning for its ConsumerRuntime: ConsumerOptions fields (watermarks,
        ``max_backlog_bytes``) and the :data:`RUNTIME_HOOKS` (``backlog``, ``dispatch_limit``)."""
        # A backlog of up to one more window waits behind the running handlers, so a finished
        # handler is replaced at once instead of after the next pause/resume round trip.
        concurrency = self.options.concurrency
        return {"high_watermark": 2 * concurrency, "low_watermark": concurrency + concurrency // 2}

    # ---------------------------------------------------------------- for the kinds

    async def open_caches(self, stack: AsyncExitStack) -> None:  # noqa: B027 - optional hook
        """Start the kind's own caches on ``stack`` (the job cache is already running)."""

    @abstractmethod
    async def handle(self, message: Message, value: Any) -> Outcome:
        """Process one decoded message; return once its output was acknowledged."""

    async def produce(self, role: TopicRole, model: BaseModel) -> None:
        """Send ``model`` to the topic of ``role`` and wait for the broker's acknowledgement."""
        if self.producer is None:
            raise ConfigurationError(f"the {self.kind} worker is not running")
        topic = self.registry.name(role)
        await self.producer.produce_record(topic, to_record(model, role=role))
        child(MESSAGES_PRODUCED, self.kind, topic).inc()

    def heartbeat(self) -> WorkerHeartbeat:
        """The heartbeat to publish now."""
        runtime = self.runtime
        return WorkerHeartbeat(
            worker_id=self.worker_id,
            kind=self.kind,
            host=socket.gethostname(),
            pid=os.getpid(),
            group_id=self.group_id,
            version=dspex_version(),
            started_at=self._started_at,
            in_flight=runtime.running if runtime is not None else 0,  # the read-ahead is not in flight
            limit=self.endpoints.limit() or float(self.options.concurrency),
            breaker_state=self.endpoints.worst_state(),
            endpoints=self.endpoints.health(),
            assigned_partitions=len(runtime.assignment()) if runtime is not None else 0,
            paused_partitions=len(runtime.paused_partitions()) if runtime is not None else 0,
            metrics_url=self.metrics_server.url if self.metrics_server is not None else None,
            concurrency=self.options.concurrency,
        )

    # ---------------------------------------------------------------- LM endpoints down / up

    def _breaker_changed(self, api_base: str, state: BreakerState) -> None:
        # Any thread may report it (the LM call that saw the failure); act on the worker's loop.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._schedule_hold)

    def _schedule_hold(self) -> None:
        previous = self._hold_task
        self._hold_task = asyncio.create_task(self._apply_hold(previous), name="dspex-breaker-hold")

    async def _apply_hold(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:  # one after the other, so the last change wins
            await asyncio.gather(previous, return_exceptions=True)
        state = self.endpoints.hold_state()  # paused only while no endpoint answers
        runtime = self.runtime
        if runtime is not None:
            if state == "closed" and runtime.held:
                await runtime.resume_all()
                logger.info("%s: an LM endpoint answers again; partitions resumed", self.worker_id)
            elif state != "closed" and not runtime.held:
                await runtime.pause_all()
                logger.warning("%s: every LM endpoint in use is down; partitions paused", self.worker_id)
        if self.heartbeats is not None:
            await self.heartbeats.send_now()

    # ---------------------------------------------------------------- around every message

    async def _handle(self, message: Message, value: Any) -> None:
        gauge = child(TASKS_IN_FLIGHT, self.kind)
        gauge.inc()
        started = time.perf_counter()
        try:
            outcome = await self.handle(message, value)
        finally:
            gauge.dec()
        child(HANDLER_DURATION, self.kind).observe(time.perf_counter() - started)
        child(MESSAGES_CONSUMED, self.kind, str(message.topic()), outcome).inc()

    async def _account_dead_letter(self, letter: DeadLetter) -> None:
        MESSAGES_CONSUMED.labels(kind=self.kind, topic=letter.original_topic, outcome="dead_lettered").inc()
        if letter.job_id is None or letter.candidate_id is None or letter.example_index is None:
            logger.warning("dead letter from %s names no job; not accounted", letter.original_topic)
            return
        await self.produce("scores", await self._dead_letter_score(letter))

    async def _dead_letter_score(self, letter: DeadLetter) -> ScoreRecord:
        job_id, candidate_id, index = (
            letter.job_id or "",
            letter.candidate_id or "",
            letter.example_index or 0,
        )
        if self.jobs is not None and self.jobs.job(job_id) is None:
            await self.jobs.wait_job(job_id, self.options.job_wait_s)
        failure_score = self.jobs.failure_score(job_id) if self.jobs is not None else 0.0
        error = ErrorInfo(
            type=letter.error_type,
            message=_trim(f"dead-lettered by the {self.kind} worker ({letter.reason}): {letter.error}"),
            systemic=letter.reason in SYSTEMIC_DLQ_REASONS,
        )
        return ScoreRecord(
            job_id=job_id,
            candidate_id=candidate_id,
            example_index=index,
            task_id=task_id_for(job_id, candidate_id, index),
            score=failure_score,
            error=error,
            source=SCORE_SOURCE_DLQ,
            worker_id=self.worker_id,
        )


def dspex_version() -> str | None:
    try:
        return version("dspex")
    except PackageNotFoundError:
        return None
