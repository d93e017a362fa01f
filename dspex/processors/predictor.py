"""The predictor worker: tasks in, predictions out (``dspex worker predict``).

Tasks are read ahead of the running ones into one queue per job and started from the jobs in
turn, weighted by priority (:mod:`dspex.processors.fairqueue`), so that a small job is not stuck
behind a big one; each job within its in-flight budget (``num_threads``), and no more than the LM
endpoints can take (their limits plus headroom) or the event loop can serve (the loop window).
A job's LM calls wait for limiter slots in turn with other jobs' (``limiter_flow``).

For each Task (consumer group ``<prefix>predict``, up to ``--concurrency`` in flight):

1. skip it when its job was cancelled or has failed (committed, nothing produced); a task whose
   ``deadline`` has passed is not run either: its record carries a ``DeadlineExceeded`` error, so
   the job accounts it as an error;
2. resolve the candidate program (:class:`~dspex.processors.candidates.CandidateCache`) and the job's
   LM (``Task.lm``, for predictors without their own), both checked against the security policy
   before any call; a refusal dead-letters the task (reason ``security_policy``);
3. run ``await program.acall(**inputs)`` with the job's LM in the context;
4. produce a PredictionRecord (outputs, trace, usage, latency, adapter) keyed by task id, and return
   only once the broker acknowledged it, so the task's offset is committed only after its result;
   or, when the job's metric is a built-in, score it here and produce its ScoreRecord instead (below).

Built-in metrics are scored inline: when the job's metric is ``MetricSpec(kind="builtin")`` (e.g.
``exact_match:answer``), the predictor runs it on the prediction itself and produces the
:class:`~dspex.schemas.ScoreRecord` (``source="predictor"``, keyed by job id) straight to the scores
topic; nothing goes to the predictions topic and the scorer never sees the example. A built-in is
a pure, cheap function of the example and the outputs, and dspex's own code: running it where the
prediction is made saves a produce, a consume, an encode/decode pair and the broker's work per
example. The record is what the scorer would have written (:mod:`dspex.processors.inline_score`,
shared with it): an errored prediction scores the job's ``failure_score`` with its error, a metric
that raises scores ``failure_score`` (never systemic), the metric's span (``dspex.score``) is in the
example's trace under ``dspex.predict``, and the usage, attempt id and everything else the
aggregator reads are the prediction's. Imported metrics (``--allow-module``) and LM judges still go
through the scorer, whose scaling and security policy are for them, and so does a prediction whose
job this predictor has not read yet or whose built-in cannot be built (the scorer dead-letters it
as before). ``--no-inline-builtin-metrics`` sends every prediction to the scorer. In the worker
metrics an inline score counts as ``dspex_messages_produced_total{kind="predict",topic=<scores>}``;
the scorer's counters do not move for it.

Programs that run model-written code (RLM, ProgramOfThought, CodeAct) get their interpreters
from the worker's sandbox pool (``--sandbox-pool N``, :mod:`dspex.sandbox.worker`); without one
their tasks fail at once with that reason (a failed example, not systemic), before any LM call.

Running tasks of a job stop as soon as the job is cancelled or fails (the job cache's event for it):
they are cancelled where they are, their LM requests included, and count as skipped. A task still
running at its deadline is stopped the same way and recorded as ``DeadlineExceeded``. A run cancelled
for any reason (its job stopped, its partition revoked or lost, the worker stopping) after some of
its LM calls were answered reports their usage in a :class:`~dspex.schemas.UsageReport` on the
scores topic, so the job is charged for every answered call. Until a run's record is acknowledged,
its answered calls are listed in the predictor's heartbeats (``unreported``, per job): if the
predictor is killed, the aggregator reports them in the job's ``usage_unreported``
(:mod:`dspex.processors.aggregate_deaths`).

A program or LM that fails yields a PredictionRecord with an error instead (scored, here or by the
scorer, as the job's failure score): ``systemic`` for a bad key, an unknown model or a program that
cannot be built, so that the aggregator fails the whole job at once with the provider's message.

    worker = Predictor(KafkaSettings(bootstrap_servers="127.0.0.1:9092"), WorkerOptions(prefix="dspex."))
    worker.install_signal_handlers()
    await worker.run()
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, AsyncExitStack, nullcontext
from typing import Any

from confluent_kafka import Message
from pydantic_core import to_jsonable_python

from dspex import configuration as dspex_settings
from dspex.adapters.types import media_fetches
from dspex.errors import (
    AdapterParseError,
    ConfigurationError,
    LMError,
    PoisonMessageError,
    ProgramLoadError,
    SecurityPolicyError,
)
from dspex.lm import LM, Usage
from dspex.lm.batch_mode import ParkRequest, batch_replay
from dspex.lm.limiter import limiter_flow
from dspex.lm.usage import track_totals
from dspex.observability.metrics import (
    LM_CALLS,
    TASKS_WINDOW,
    child,
    sandbox_execution,
    sandbox_pool_gauges,
)
from dspex.observability.recorder import recording
from dspex.observability.tracing import kafka as tracing_kafka
from dspex.primitives import Module, Prediction
from dspex.processors.candidates import CandidateCache
from dspex.processors.common import Outcome, Worker, WorkerOptions, error_info
from dspex.processors.fairqueue import (
    READ_AHEAD_BYTES,
    READ_AHEAD_MESSAGES,
    FairQueue,
    job_budget,
    job_flow,
)
from dspex.processors.inline_score import MetricBook, produce_score
from dspex.processors.lm_calls import logged_fields, logged_lm_calls
from dspex.processors.loopwindow import LoopLagWindow
from dspex.processors.provider_batch import park, parked_request
from dspex.processors.unreported import UnreportedLedger, usage_record
from dspex.sandbox.worker import WorkerSandbox, worker_sandbox
from dspex.schemas.base import utc_now
from dspex.schemas.common import ErrorInfo, TraceEntry
from dspex.schemas.dlq import DLQ_REASON_SECURITY_POLICY, DeadLetter
from dspex.schemas.headers import HEADER_JOB_ID, HEADER_SCHEMA, HEADER_TRACEPARENT, TRACEPARENT, headers_for
from dspex.schemas.jobs import EvalJob
from dspex.schemas.results import SCORE_SOURCE_PREDICTOR, PredictionRecord, UsageReport
from dspex.schemas.serde import encode
from dspex.schemas.tasks import Task
from dspex.schemas.workers import WorkerHeartbeat
from dspex.streams.blobs import BlobReader, BlobRef, refs_of, shrink
from dspex.streams.config import KafkaSettings
from dspex.streams.consumer import message_size
from dspex.streams.serde import Record, message_position
from dspex.utils.callback import new_call_id
from dspex.utils.tool_timings import count_from, tool_timings

__all__ = ["Predictor"]

logger = logging.getLogger(__name__)

_RAW_TEXT_KEPT = 500
DEADLINE_ERROR = "DeadlineExceeded"
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
# Tasks started beyond the LM limit: those resolving their program or producing their result hold
# no LM slot, so the LM stays busy while they do (at 100 ms LM latency a task spends some 40 ms
# outside its call: adapter, result produced with a 20 ms linger). The cost: a task that starts
# waits in the limiter behind at most half a window, half a round trip.
DISPATCH_HEADROOM_MIN = 16
DISPATCH_HEADROOM_SHARE = 0.5
_WINDOW_REFRESH_S = 0.05
LOOP_WINDOW_MIN = 64


class Predictor(Worker):
    """Runs candidate programs on tasks (see the module docs)."""

    kind = "predict"
    input_role = "tasks"
    input_model = Task

    candidates: CandidateCache | None = None
    sandbox: WorkerSandbox | None = None
    blobs: BlobReader | None = None

    def __init__(
        self,
        settings: KafkaSettings,
        options: WorkerOptions | None = None,
        *,
        read_ahead: int = READ_AHEAD_MESSAGES,
        read_ahead_bytes: int = READ_AHEAD_BYTES,
    ) -> None:
        """``read_ahead`` messages and ``read_ahead_bytes`` bytes may wait in the fair queue."""
        super().__init__(settings, options)
        if read_ahead < 1 or read_ahead_bytes < 1:
            raise ConfigurationError("read_ahead and read_ahead_bytes must be >= 1")
        self.read_ahead = read_ahead
        self.read_ahead_bytes = read_ahead_bytes
        self._window = self.options.concurrency
        self._window_at = -_WINDOW_REFRESH_S
        # How many tasks this process's event loop can carry (see dspex.processors.loopwindow).
        self.loop_window = LoopLagWindow(
            maximum=self.options.concurrency, minimum=min(self.options.concurrency, LOOP_WINDOW_MIN)
        )
        # Running handler tasks per job, and a watcher per such job that cancels them if it stops.
        self._running: dict[str, set[asyncio.Task[Any]]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[Any]] = set()
        # Read-ahead tasks per job, started in turn, each job within its in-flight budget.
        self.queue: FairQueue[Message] = FairQueue(
            job_flow, message_size, budget_of=self._job_budget, identify=message_position
        )
        self._reports: set[asyncio.Task[None]] = set()  # usage reports of cancelled runs, being sent
        # LM calls answered that no acknowledged record carries yet, per job: in every heartbeat
        self.unreported = UnreportedLedger()
        # Built-in metrics only (no module is imported for them): see the module docs.
        self.inline_metrics = MetricBook(allow_modules=())

    def runtime_options(self) -> dict[str, Any]:
        """Read ahead into per-job fair queues; start tasks as the LM endpoints can take them."""
        concurrency = self.options.concurrency
        return {
            # Paused once the queue holds read_ahead tasks beyond the running ones (or its bytes).
            "high_watermark": concurrency + self.read_ahead,
            "low_watermark": concurrency + self.read_ahead // 2,
            "max_backlog_bytes": self.read_ahead_bytes,
            "backlog": self.queue,
            "dispatch_limit": self.dispatch_limit,
        }

    def _job_budget(self, message: Message) -> int | None:
        """A task's job in-flight budget here: what it asked for (``num_threads``), <= ``--concurrency``."""
        asked = job_budget(message)
        return None if asked is None else min(asked, self.options.concurrency)

    def dispatch_limit(self) -> int:
        """How many tasks may run now: the sum of the LM endpoints' limits, plus headroom.

        DESIGN: the limiter lets waiting calls go first come, first served. Tasks started far
        beyond its limit would wait there in arrival order and the fair queue's order would be
        lost (a provider's 429s cut the limit well below ``--concurrency``; the limiter also starts
        low and ramps). So tasks start only as the LM can take them, and the rest wait in the fair
        queue. Before the first LM exists, ``--concurrency``. Never more than the loop window: what
        this process's event loop can serve without every task waiting for it
        (:mod:`dspex.processors.loopwindow`).
        """
        now = time.monotonic()
        if now - self._window_at >= _WINDOW_REFRESH_S:  # health() takes a lock: not on every start
            self._window_at = now
            limits = [endpoint.limit for endpoint in self.endpoints.health()]
            total = sum(limits)
            headroom = max(DISPATCH_HEADROOM_MIN, int(total * DISPATCH_HEADROOM_SHARE))
            self._window = int(total) + headroom if limits else self.options.concurrency
        return min(self._window, self.loop_window.value)

    async def open_caches(self, stack: AsyncExitStack) -> None:
        cache = CandidateCache(
            self.settings,
            self.registry.name("candidates"),
            policy=self.options.policy,
            lms=self.lms,
            wait_s=self.options.candidate_wait_s,
        )
        self.candidates = await stack.enter_async_context(cache)
        # Large example values (dspex.streams.blobs): read back only when a task names one.
        self.blobs = await stack.enter_async_context(BlobReader(self.settings, self.registry.name("blobs")))
        stack.callback(self._stop_watchers)
        # the handlers start after this, in this context: they see the pool (or the refusal)
        self.sandbox = stack.enter_context(worker_sandbox(self.options.sandbox_pool))
        # and no program downloads a media URL unless the worker was started to (see types._fetch)
        stack.enter_context(media_fetches(allowed=self.options.allow_media_fetch))
        sampler = asyncio.create_task(self.loop_window.run(self._running_now), name="dspex-loop-window")
        stack.callback(sampler.cancel)
        if self.sandbox.pool is not None and self.options.metrics:
            sandbox_pool_gauges(self.sandbox.pool.stats)

    def _running_now(self) -> int:
        return self.runtime.running if self.runtime is not None else 0

    def _stop_watchers(self) -> None:
        for watcher in self._watchers.values():
            watcher.cancel()
        self._watchers.clear()

    async def handle(self, message: Message, value: Any) -> Outcome:
        try:
            return await self._handle_task(message, value)
        finally:
            self.queue.release(message_position(message))  # its job may start another task

    async def _account_dead_letter(self, letter: DeadLetter) -> None:
        # A task that never reached handle() (undecodable) gives its job's slot back here.
        self.queue.release((letter.original_topic, letter.partition, letter.offset))
        await super()._account_dead_letter(letter)

    async def _handle_task(self, message: Message, value: Any) -> Outcome:
        task: Task = value
        reason = self.jobs.stop_reason(task.job_id) if self.jobs is not None else None
        if reason is not None:
            logger.debug("skipping task %s of %s job %s", task.task_id, reason, task.job_id)
            return "skipped"
        # The example's trace goes on here (when tracing is on) and on to the prediction's headers.
        # Its LM calls are listed as unreported (in heartbeats) until its record is acknowledged.
        tracked = self.unreported.run(task.job_id)
        with tracing_kafka.continued(message, "dspex.predict", task) as span, tracked:
            with limiter_flow(task.job_id):  # the job's LM calls take turns with other jobs' for slots
                try:
                    record = await self._predict_unless_stopped(task)
                except ParkRequest as parked:  # batch mode: the provider-batch worker asks, then resumes it
                    await park(self, parked_request(task, parked.call))
                    return "ok"
            if record is None:
                logger.debug("stopped task %s: job %s was cancelled or failed", task.task_id, task.job_id)
                return "skipped"
            if record.error is not None:
                span.failed(f"{record.error.type}: {record.error.message}")
            await self._deliver(record)
        return "ok"

    async def _deliver(self, record: PredictionRecord) -> None:
        """Produce ``record``'s score when its job's metric is scored here, else ``record`` itself."""
        job = self.inline_job(record)
        if job is None:
            await self.produce("predictions", record)
            return
        # the metric's span, as the scorer's would be, a child of dspex.predict
        metric_of = self.inline_metrics.of_job
        await produce_score(self, _CurrentSpan(), record, job, metric_of, source=SCORE_SOURCE_PREDICTOR)

    def inline_job(self, record: PredictionRecord) -> EvalJob | None:
        """``record``'s job when this predictor scores it (a built-in metric that builds), else None."""
        if not self.options.inline_builtin_metrics or self.jobs is None:
            return None
        job = self.jobs.job(record.job_id)
        if job is None or job.metric.kind != "builtin":
            return None
        try:
            self.inline_metrics.of_job(job)
        except PoisonMessageError:  # the scorer dead-letters it, as for any metric it cannot build
            return None
        return job

    async def _predict_unless_stopped(self, task: Task) -> PredictionRecord | None:
        """:meth:`predict`, or None when the job stopped while it ran (its LM calls cancelled)."""
        current = asyncio.current_task()
        if self.jobs is None or current is None:
            return await self.predict(task)
        self._watch(task.job_id, current)
        try:
            return await self.predict(task)
        except asyncio.CancelledError:
            # Ours only when the watcher cancelled it and nobody else (a drain, a revoke) did too.
            if current in self._stopping and current.cancelling() == 1:
                current.uncancel()
                return None
            raise
        finally:
            self._stopping.discard(current)
            self._unwatch(task.job_id, current)

    def _watch(self, job_id: str, current: asyncio.Task[Any]) -> None:
        self._running.setdefault(job_id, set()).add(current)
        if job_id not in self._watchers and self.jobs is not None:
            stopped = self.jobs.stopped(job_id)
            watcher = asyncio.create_task(self._stop_on(job_id, stopped), name=f"dspex-stop-{job_id}")
            self._watchers[job_id] = watcher

    def _unwatch(self, job_id: str, current: asyncio.Task[Any]) -> None:
        running = self._running.get(job_id)
        if running is not None:
            running.discard(current)
        if not running:  # the job's last running task here: its watcher is not needed for now
            self._running.pop(job_id, None)
            watcher = self._watchers.pop(job_id, None)
            if watcher is not None and watcher is not asyncio.current_task():
                watcher.cancel()

    async def _stop_on(self, job_id: str, stopped: asyncio.Event) -> None:
        """Cancel the job's running tasks once it stops (one watcher per job, for the worker's life)."""
        await stopped.wait()
        running = set(self._running.get(job_id, ()))
        if running:
            logger.info("job %s stopped: cancelling its %s running tasks", job_id, len(running))
        for task in running:
            self._stopping.add(task)
            task.cancel()

    async def predict(self, task: Task) -> PredictionRecord:
        """Run ``task``; a failure of the program or its LM becomes a record with an error.

        With user callbacks (``--callback``) the record carries what they heard (``callback_events``).
        Raises PoisonMessageError for tasks that must be dead-lettered (unknown candidate, a
        program or LM the policy refuses). An agent's tool calls, with their start and duration,
        go into the record's ``tool_calls``, its LM calls into ``lm_call_log`` (unless the worker
        records none: :mod:`dspex.processors.lm_calls`).
        """
        with tool_timings() as tools, logged_lm_calls(self.options.record_lm_calls):
            record = await self._heard(task)
        calls = tools.records()
        return record.model_copy(update={"tool_calls": calls}) if calls else record

    async def _heard(self, task: Task) -> PredictionRecord:
        """:meth:`_predict`, with what the user callbacks heard."""
        if not self.options.callbacks:
            return await self._predict(task)
        with recording() as log:
            record = await self._predict(task)
        events = log.recorded()
        return record if events is None else record.model_copy(update={"callback_events": events})

    async def _predict(self, task: Task) -> PredictionRecord:
        try:
            program, lm = await self._resolve(task)
        except (ProgramLoadError, ConfigurationError) as exc:  # every task of the job fails alike
            return self._record(task, error=error_info(exc), usage=Usage(), latency=0.0)
        refused = self.sandbox.refusal(task.candidate_id, program) if self.sandbox is not None else None
        if refused is not None:  # no LM call spent on a program this worker cannot run
            sandbox_execution("refused")
            return self._record(task, error=error_info(refused), usage=Usage(), latency=0.0)
        left = _time_left(task)
        if left is not None and left <= 0:
            return self._record(task, error=_expired(task, -left), usage=Usage(), latency=0.0)
        with track_totals() as tracker:
            started = time.perf_counter()
            count_from(started)  # tool calls' offsets, like the latency, from the program's start
            try:
                with self._lm_context(lm):
                    prediction = await _within(left, self._run(task, program))
            except _DeadlineReached:
                latency = time.perf_counter() - started
                self._count_lm(tracker.usage, None)
                error = _expired(task, latency - (left or 0.0), running=True)
                return self._record(task, error=error, usage=tracker.usage, latency=latency)
            except asyncio.CancelledError:  # no result: the calls answered so far are reported alone
                self._count_lm(tracker.usage, None)
                self._report_unfinished(task, tracker.usage)
                raise
            except SecurityPolicyError as exc:  # e.g. a tool outside --allow-module, at run time
                raise PoisonMessageError(str(exc), reason=DLQ_REASON_SECURITY_POLICY) from exc
            except Exception as exc:  # the program's failure is the task's result, scored downstream
                latency = time.perf_counter() - started
                self._count_lm(tracker.usage, exc)
                return self._record(task, error=_failure(exc), usage=tracker.usage, latency=latency)
        latency = time.perf_counter() - started
        self._count_lm(tracker.usage, None)
        return self._success(task, prediction, tracker.usage, latency)

    async def _run(self, task: Task, program: Module) -> Any:
        # a program running code waits for a sandbox slot first (see WorkerSandbox.slot)
        slot = self.sandbox.slot(task.candidate_id, program) if self.sandbox is not None else nullcontext()
        async with slot:
            with batch_replay(task.batch_answers or {}) if task.lm_mode == "batch" else nullcontext():
                return await program.acall(**await self._inputs(task))

    async def _inputs(self, task: Task) -> dict[str, Any]:
        """The task's inputs, values sent as blobs read back (InputError: its example fails)."""
        if self.blobs is None:
            return task.inputs
        return await self.blobs.resolve(task.example, task.input_keys, where=f"example {task.example_index}")

    async def _resolve(self, task: Task) -> tuple[Module, LM | None]:
        """The program and the job's LM (None: the program's predictors bring their own)."""
        if self.candidates is None:
            raise ConfigurationError("the predict worker is not running")
        program = await self.candidates.program(task.candidate_id)
        try:
            lm = self.lms.for_spec(task.lm, job_id=task.job_id) if task.lm is not None else None
        except SecurityPolicyError as exc:
            raise PoisonMessageError(
                f"job {task.job_id}: LM refused: {exc}", reason=DLQ_REASON_SECURITY_POLICY
            ) from exc
        return program, lm

    @staticmethod
    def _lm_context(lm: LM | None) -> AbstractContextManager[Any]:
        # Only set when the job named one: predictors with their own LM keep it either way. A worker
        # keeps no LM history and no DSPy trace list: each task's trace travels in its Prediction.
        if lm is None:
            return dspex_settings.context(disable_history=True, trace=None)
        return dspex_settings.context(lm=lm, disable_history=True, trace=None)

    def _success(self, task: Task, prediction: Any, usage: Usage, latency: float) -> PredictionRecord:
        if not isinstance(prediction, Prediction):
            problem = ConfigurationError(
                f"the program returned {type(prediction).__name__}; return a dspex.Prediction"
            )
            return self._record(task, error=error_info(problem), usage=usage, latency=latency)
        blobs = refs_of(task.example)
        return self._record(
            task,
            outputs=to_jsonable_python(prediction.to_dict(), fallback=str),
            trace=[_trace_entry(step, blobs) for step in prediction.trace],
            adapter=prediction.adapter,
            usage=usage,
            latency=latency,
        )

    def _record(self, task: Task, *, usage: Usage, latency: float, **fields: Any) -> PredictionRecord:
        return PredictionRecord(
            task_id=task.task_id,
            job_id=task.job_id,
            candidate_id=task.candidate_id,
            example_index=task.example_index,
            example=task.example,
            usage=usage_record(usage),
            latency_s=latency,
            attempt=task.attempt,
            # One record per run of the task: a run after a redelivery made LM calls of its own,
            # and the aggregator charges each distinct attempt id once (see ScoreRecord).
            attempt_id=new_call_id(),  # unique per process run: a random prefix and a counter
            worker_id=self.worker_id,
            **logged_fields(),  # the run's LM calls, when logged (see predict)
            **fields,
        )

    def _report_unfinished(self, task: Task, usage: Usage) -> None:
        """Send the usage of a cancelled run, if it made any LM call, without waiting (the run is
        being cancelled): the producer is flushed when the worker stops."""
        if not usage.lm_calls or self.producer is None:
            return
        report = UsageReport(
            job_id=task.job_id,
            candidate_id=task.candidate_id,
            example_index=task.example_index,
            task_id=task.task_id,
            attempt_id=new_call_id(),
            usage=usage_record(usage),
            worker_id=self.worker_id,
        )
        # The job only: an aggregator that cannot read the report must not score the example.
        wanted = (HEADER_SCHEMA, HEADER_JOB_ID)
        headers: list[tuple[str, bytes | None]] = [
            (name, value) for name, value in headers_for(report) if name in wanted
        ]
        record = Record(value=encode(report), key=task.job_id.encode(), headers=headers)
        held = self.unreported.hold(task.job_id, usage)  # unreported until the broker has it
        sending = asyncio.get_running_loop().create_task(self._send_report(record, report, held))
        self._reports.add(sending)
        sending.add_done_callback(self._reports.discard)

    async def _send_report(self, record: Record, report: UsageReport, held: int) -> None:
        if self.producer is None:
            return
        try:
            await self.producer.produce_record(self.registry.name("scores"), record)
        except Exception as exc:  # the calls stay uncharged: say so, with how many
            logger.warning(
                "usage of %s LM calls of task %s (job %s) not reported: %s",
                report.usage.lm_calls, report.task_id, report.job_id, exc,
            )  # fmt: skip
        finally:
            self.unreported.release(held)

    def heartbeat(self) -> WorkerHeartbeat:
        """The common heartbeat, with what this predictor has not reported yet per job and how many
        tasks it lets run now (its LM limiters may allow more than its event loop does)."""
        beat = super().heartbeat()
        window = self.dispatch_limit()
        if self.options.metrics:
            child(TASKS_WINDOW, self.kind).set(window)
        return beat.model_copy(update={"unreported": self.unreported.snapshot(), "dispatch_window": window})

    def _count_lm(self, usage: Usage, error: Exception | None) -> None:
        if usage.lm_calls > usage.cache_hits:
            child(LM_CALLS, self.kind, "ok").inc(usage.lm_calls - usage.cache_hits)
        if usage.cache_hits:
            child(LM_CALLS, self.kind, "cache_hit").inc(usage.cache_hits)
        if isinstance(error, LMError | AdapterParseError):
            child(LM_CALLS, self.kind, _outcome_name(error)).inc()


class _CurrentSpan:
    """The span current here as a consumed message whose headers name it (what
    :func:`~dspex.observability.tracing.kafka.continued` continues)."""

    __slots__ = ("headers",)

    def __init__(self) -> None:
        traceparent = TRACEPARENT.get()
        self.headers = [(HEADER_TRACEPARENT, traceparent)] if traceparent is not None else []


class _DeadlineReached(Exception):
    """The task's deadline passed while its program ran."""


def _time_left(task: Task) -> float | None:
    """Seconds until the task's deadline (negative once past), None without one."""
    if task.deadline is None:
        return None
    return (task.deadline - utc_now()).total_seconds()


async def _within(seconds: float | None, call: Any) -> Any:
    """Await ``call``, stopped after ``seconds`` (None: no bound) with _DeadlineReached."""
    if seconds is None:
        return await call
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await call
    except TimeoutError:
        if deadline.expired():
            raise _DeadlineReached from None
        raise  # the program's own timeout, not the deadline


def _expired(task: Task, late_s: float, *, running: bool = False) -> ErrorInfo:
    when = task.deadline.isoformat() if task.deadline is not None else "?"
    what = "stopped while running" if running else "not run"
    return ErrorInfo(
        type=DEADLINE_ERROR,
        message=f"task {task.task_id}: its deadline {when} passed {max(late_s, 0.0):.3f} s ago; {what}",
        systemic=False,
    )


def _failure(exc: Exception) -> ErrorInfo:
    if isinstance(exc, AdapterParseError):
        raw = exc.raw_text if len(exc.raw_text) <= _RAW_TEXT_KEPT else exc.raw_text[:_RAW_TEXT_KEPT] + "..."
        return error_info(exc, message=f"{exc}; the LM answered: {raw!r}")
    if not isinstance(exc, LMError | ConfigurationError):
        logger.debug("program failed on a task", exc_info=exc)
    return error_info(exc)


def _outcome_name(error: Exception) -> str:
    """``LMRateLimitError`` -> ``rate_limit``: a bounded label value per error class."""
    name = type(error).__name__.removeprefix("LM").removesuffix("Error")
    return _CAMEL.sub("_", name).lower() or "error"


def _trace_entry(step: Any, blobs: Mapping[str, BlobRef]) -> TraceEntry:
    # values that came through the blobs topic go back as their references: a result stays small
    return TraceEntry(
        predictor=step.predictor_path,
        inputs=shrink(to_jsonable_python(step.inputs, fallback=str), blobs),
        outputs=to_jsonable_python(step.outputs, fallback=str),
    )
