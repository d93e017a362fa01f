"""The OpenTelemetry machinery behind dspex's tracing: sampling, the span recorder, a counted exporter.

Sampling is parent-based with a ratio for new traces, decided by :class:`Recorder` once per trace
part: at a new trace's root (an example), or from a ``traceparent``'s flag where a worker continues
one. Sampled traces get the SDK's spans. The others get
:class:`~dspex.observability.tracing.lean.LeanSpan`s, which cost a few attribute stores each and are
exported only when the example failed in this process (its local root span failed), so every
failed example is kept, each process deciding for the part it ran, without a collector doing tail
sampling (what a failed unsampled example keeps: :mod:`dspex.observability.tracing`).

Exports run on the batch processor's background thread, from a bounded queue (a full one drops
spans, never waits). An export that fails (unreachable receiver, an error answer, a timeout)
increments ``dspex_trace_export_errors_total`` and is logged at most once a minute; the spans are
dropped and the program never waits for the receiver. After a failed export the receiver is left
alone for a while (1 s, doubling up to a minute, back to none after an export succeeds): the
batches due meanwhile are dropped without being encoded or sent, and counted the same way, so a
receiver that never answers costs one export timeout per back-off rather than one per batch.
:func:`~dspex.observability.tracing.flush` and shutting tracing down wait at most their timeout.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
    get_current_span,
    set_span_in_context,
)
from prometheus_client import Counter

from dspex.observability.tracing.lean import UNSAMPLED, Keep, LeanSpan, sampled_now
from dspex.observability.tracing.settings import TracingSettings

__all__ = [
    "ALWAYS_KEPT",
    "EXPORT_ERRORS",
    "CountedExporter",
    "Recorder",
    "build_provider",
    "remote_span_context",
]

logger = logging.getLogger(__name__)

EXPORT_ERRORS: Final = Counter(
    "dspex_trace_export_errors", "Span batches that could not be exported (they are dropped)."
)

LOG_EVERY_S: Final = 60.0
# After a failed export, no batch is encoded or sent for this long, doubling per failure up to
# BACKOFF_MOST_S: a receiver that does not answer would otherwise hold every batch for a timeout.
BACKOFF_FIRST_S: Final = 1.0
BACKOFF_MOST_S: Final = 60.0
# New traces kept whatever the sampling ratio: a job's own span (one per job, what its examples link to).
ALWAYS_KEPT: Final = frozenset({"dspex.job"})
# What the OTLP exporter logs on every failed export; ours says it once a minute.
_EXPORTER_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
)


class Recorder:
    """Starts spans: the SDK's for sampled traces, :class:`~dspex.observability.tracing.lean.LeanSpan`
    for the others. It makes every sampling decision itself (parent-based; a new trace kept with
    probability ``ratio``, a job's span always), so the SDK is asked only for spans it records."""

    def __init__(self, tracer: Tracer, keep: Keep, ratio: float) -> None:
        self.tracer, self.keep, self.ratio = tracer, keep, ratio

    def start(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        start_time: int | None = None,
        sampled: bool | None = None,
    ) -> Span:
        """A span ``name`` under ``context`` (None: the current one); not made current.
        ``start_time``: when it began, in epoch nanoseconds (None: now); ``sampled``: if it starts a
        new trace, the decision :meth:`draw` gave for it (None: drawn here)."""
        if context is None:
            lean = UNSAMPLED.get()
            if lean is not None:
                return lean.child(name, kind, attributes, links, start_time)
        parent = get_current_span(context)
        if isinstance(parent, LeanSpan):
            return parent.child(name, kind, attributes, links, start_time)
        parent_context = parent.get_span_context()
        if parent_context.is_valid:
            if parent_context.trace_flags.sampled:
                return self._sdk(name, context, kind, attributes, links, start_time)
            return LeanSpan.under(self.keep, parent_context, name, kind, attributes, links, start_time)
        if name in ALWAYS_KEPT or (sampled if sampled is not None else sampled_now(self.ratio)):
            return self._sdk(name, context, kind, attributes, links, start_time)
        return LeanSpan.new_trace(self.keep, name, kind, attributes, links, start_time)

    def draw(self) -> bool:
        """A new trace's sampling decision (kept with probability ``ratio``)."""
        return sampled_now(self.ratio)

    def continued(
        self, name: str, traceparent: str | None, kind: SpanKind, attributes: dict[str, Any]
    ) -> Span:
        """A span ``name`` continuing the remote span a W3C ``traceparent`` names (None or not
        valid: under the current span, as :meth:`start` with no context)."""
        remote = remote_span_context(traceparent) if traceparent else None
        if remote is None:
            return self.start(name, kind=kind, attributes=attributes)
        if remote.trace_flags.sampled:
            context = set_span_in_context(NonRecordingSpan(remote))
            return self._sdk(name, context, kind, attributes, (), None)
        return LeanSpan.under(self.keep, remote, name, kind, attributes)

    def _sdk(
        self,
        name: str,
        context: Context | None,
        kind: SpanKind,
        attributes: dict[str, Any] | None,
        links: Sequence[Link],
        start_time: int | None,
    ) -> Span:
        return self.tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, links=links, start_time=start_time
        )


_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def remote_span_context(traceparent: str) -> SpanContext | None:
    """The remote span a W3C ``traceparent`` value names; None when it is not a valid one."""
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None or match[1] == "ff":
        return None
    trace_id, span_id = int(match[2], 16), int(match[3], 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[4], 16)))


class _ExportAll(BatchSpanProcessor):
    """A batch processor that exports what it is handed, sampled or not: the spans of an unsampled
    trace's failed part come here too (see :mod:`~dspex.observability.tracing.lean`).

    A span that finds the queue full is dropped here, counted, and reported at most once a minute:
    the SDK's own drop logs a warning per span (a log record made and filtered out: 44 us and 56
    Python calls a span, measured), and a receiver that never answers keeps the queue full."""

    def __init__(self, exporter: SpanExporter, **options: Any) -> None:
        super().__init__(exporter, **options)
        inner = self._batch_processor
        self._emit = inner.emit
        # the SDK's queue (1.45: a bounded deque); without it, every span goes to emit as before
        queue = getattr(inner, "_queue", None)
        self._queue: Any = queue if isinstance(queue, deque) else None
        self._room = int(getattr(inner, "_max_queue_size", 0) or 0)
        self.dropped = 0
        self._last_logged = -LOG_EVERY_S
        self._shutdown_wait_ms = int(options.get("export_timeout_millis") or 30000)

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if queue is not None and len(queue) >= self._room:
            self._drop()
            return
        self._emit(span)

    def force_flush(self, timeout_millis: int | None = 30000) -> bool:
        """Export what is queued, waiting at most ``timeout_millis``; False when not done by then.
        (The SDK's flush exports on the calling thread and ignores its timeout: against a receiver
        that never answers it took one export timeout per batch, 8 s for ``flush(1.0)``.)"""
        timeout_s = (timeout_millis if timeout_millis is not None else 30000) / 1000
        done = threading.Event()

        def flush() -> None:
            try:
                super(_ExportAll, self).force_flush(timeout_millis)
            finally:
                done.set()

        try:
            threading.Thread(target=flush, name="dspex-trace-flush", daemon=True).start()
        except RuntimeError:  # no new threads while the interpreter shuts down (3.12+): flush here
            return bool(super().force_flush(timeout_millis))
        return done.wait(timeout_s)

    def shutdown(self) -> None:
        """Stop the batch thread, waiting for it at most one export timeout (the SDK: 30 s)."""
        self._batch_processor.shutdown(timeout_millis=self._shutdown_wait_ms)

    def _drop(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_logged >= LOG_EVERY_S:
            self._last_logged = now
            logger.warning(
                "the span export queue is full (the receiver is slow or unreachable): %d span(s) "
                "dropped so far; reported again in a minute at the earliest",
                self.dropped,
            )


class CountedExporter(SpanExporter):
    """Wraps an exporter: failures are counted (``dspex_trace_export_errors_total``) and logged at
    most once a minute; nothing raises out of an export."""

    def __init__(self, inner: SpanExporter, where: str) -> None:
        self._inner = inner
        self._where = where
        self._last_logged = -LOG_EVERY_S
        self._failed_since_log = 0
        self._backoff_s = 0.0
        self.resume_at = 0.0  # time.monotonic() before which batches are dropped unsent

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if time.monotonic() < self.resume_at:
            self._failed(len(spans), "not sent: the receiver failed an export less than "
                         f"{self._backoff_s:g} s ago")  # fmt: skip
            return SpanExportResult.FAILURE
        reason = "the receiver did not accept them"
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # an exporter's bug or a transport error must not end the thread
            result, reason = SpanExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        if result is SpanExportResult.SUCCESS:
            self._backoff_s = 0.0
        else:
            self._backoff_s = min(max(2 * self._backoff_s, BACKOFF_FIRST_S), BACKOFF_MOST_S)
            self.resume_at = time.monotonic() + self._backoff_s
            self._failed(len(spans), reason)
        return result

    def _failed(self, count: int, reason: str) -> None:
        EXPORT_ERRORS.inc()
        self._failed_since_log += 1
        now = time.monotonic()
        if now - self._last_logged >= LOG_EVERY_S:
            logger.warning(
                "could not export %d spans to %s (%s); %d failed export(s) since the last report, "
                "counted in dspex_trace_export_errors_total; reported again in a minute at the earliest",
                count,
                self._where,
                reason,
                self._failed_since_log,
            )
            self._last_logged, self._failed_since_log = now, 0

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL


_QUIET: Final = _Quiet()


def build_provider(settings: TracingSettings) -> tuple[TracerProvider, Recorder]:
    """A tracer provider for ``settings`` (which :func:`~dspex.observability.tracing.settings.resolve`
    filled in); not installed as OpenTelemetry's global one, so a program's own tracing is untouched."""
    exporter: SpanExporter
    if settings.exporter is not None:
        exporter, where = settings.exporter, type(settings.exporter).__name__
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        where = settings.traces_url or "the OTLP endpoint"
        exporter = OTLPSpanExporter(endpoint=settings.traces_url, timeout=settings.export_timeout_s)
        for name in _EXPORTER_LOGGERS:
            exporter_logger = logging.getLogger(name)
            if _QUIET not in exporter_logger.filters:
                exporter_logger.addFilter(_QUIET)
    resource = Resource.create({"service.name": settings.service_name or "dspex"})
    ratio = settings.sample_ratio if settings.sample_ratio is not None else 0.0
    # the Recorder decides sampling; the SDK records whatever it is asked to start
    provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON), shutdown_on_exit=False)
    batches = _ExportAll(
        CountedExporter(exporter, where),
        schedule_delay_millis=500,
        export_timeout_millis=settings.export_timeout_s * 1000,
    )
    provider.add_span_processor(batches)
    return provider, Recorder(provider.get_tracer("dspex"), Keep(batches.on_end, resource), ratio)
