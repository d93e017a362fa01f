"""The OpenTelemetry machinery behind dspex's tracing: sampler, tail processor, counted exporter.

Sampling (parent-based, a ratio for new traces) decides which traces are *sampled*. Spans of the
others are still recorded, lean (:class:`LeanSpan`, by :class:`Recorder`), and held in memory per
trace until the trace's local root span ends in this process (an example's module call, a
worker's task span): if that span failed (its status is ERROR: the example failed here), all of
them are exported anyway, else they are dropped; an inner span that failed and was recovered from
(a parse failure the JSON fallback answered) does not count. So every failed example is kept, each
process deciding for the part of the trace it ran, without a collector doing tail sampling.

Exports run on the batch processor's background thread. An export that fails (unreachable receiver,
an error answer, a timeout) increments ``dspex_trace_export_errors_total`` and is logged at most
once a minute; the spans are dropped and the program never waits for the receiver.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
)
from opentelemetry.util.types import Attributes
from prometheus_client import Counter

from dspex.observability.tracing.settings import TracingSettings

__all__ = [
    "EXPORT_ERRORS",
    "CountedExporter",
    "KeepFailedTraces",
    "LeanSpan",
    "Recorder",
    "build_provider",
    "keepable_sampler",
]

logger = logging.getLogger(__name__)

EXPORT_ERRORS: Final = Counter(
    "dspex_trace_export_errors", "Span batches that could not be exported (they are dropped)."
)

LOG_EVERY_S: Final = 60.0
# New traces kept whatever the sampling ratio: a job's own span (one per job, what its examples link to).
ALWAYS_KEPT: Final = frozenset({"dspex.job"})
# Traces of this process whose local root has not ended yet, held while they are undecided: a bound,
# so spans of roots that never end (a killed task) cannot grow without limit.
MAX_UNDECIDED_TRACES: Final = 10_000
# What the OTLP exporter logs on every failed export; ours says it once a minute.
_EXPORTER_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
)


class _KeepJobs(Sampler):
    """A ratio sampler for new traces that always keeps the few named in ``always``."""

    def __init__(self, ratio: float, always: frozenset[str]) -> None:
        self._ratio = TraceIdRatioBased(ratio)
        self._always = always  # names of new traces kept whatever the ratio (one per job)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if name in self._always:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"KeepJobs{{{self._ratio.get_description()}}}"


def keepable_sampler(ratio: float) -> Sampler:
    """Parent-based; a new trace sampled with probability ``ratio`` (by trace id). The SDK records
    nothing of the others: :class:`Recorder` records them lean, for :class:`KeepFailedTraces`."""
    return ParentBased(root=_KeepJobs(ratio, ALWAYS_KEPT))


class LeanSpan(NonRecordingSpan):
    """A span of an unsampled trace, kept as little as it takes to export it if its trace fails:
    the SDK's span machinery (limits, locks, processors) costs more than the rest of tracing."""

    def __init__(
        self,
        context: SpanContext,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link],
        recorder: Recorder,
        start_time: int | None = None,
    ) -> None:
        super().__init__(context)
        self._parent, self._name, self._kind = parent, name, kind
        self._attributes, self._links, self._recorder = attributes, links, recorder
        self._events: list[Event] = []
        self._status = Status(StatusCode.UNSET)
        self._start = start_time if start_time is not None else time.time_ns()

    def is_recording(self) -> bool:
        return True

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self._attributes[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        self._events.append(Event(name, attributes, timestamp))

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._status = status if isinstance(status, Status) else Status(status, description)

    def end(self, end_time: int | None = None) -> None:
        recorder = self._recorder
        recorder.keeper.on_end(
            ReadableSpan(
                name=self._name,
                context=self.get_span_context(),
                parent=self._parent,
                resource=recorder.resource,
                attributes=self._attributes,
                events=self._events,
                links=self._links,
                kind=self._kind,
                status=self._status,
                start_time=self._start,
                end_time=end_time if end_time is not None else time.time_ns(),
                instrumentation_scope=recorder.scope,
            )
        )


class Recorder:
    """Starts spans: the SDK's for sampled traces, :class:`LeanSpan` for the others."""

    def __init__(self, tracer: Tracer, keeper: KeepFailedTraces, resource: Resource) -> None:
        self.tracer, self.keeper, self.resource = tracer, keeper, resource
        self.scope = InstrumentationScope("dspex")

    def start(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        start_time: int | None = None,
    ) -> Span:
        """A span ``name`` under ``context`` (None: the current one); not made current.
        ``start_time``: when it began, in epoch nanoseconds (None: now)."""
        span = self.tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, links=links, start_time=start_time
        )
        if span.is_recording():
            return span
        parent = get_current_span(context).get_span_context()
        return LeanSpan(
            span.get_span_context(),
            parent if parent.is_valid else None,
            name,
            kind,
            dict(attributes or {}),
            links,
            self,
            start_time,
        )


class _ExportAll(BatchSpanProcessor):
    """A batch processor that exports what it is handed, sampled or not: :class:`KeepFailedTraces`
    has decided already."""

    def on_end(self, span: ReadableSpan) -> None:
        self._batch_processor.emit(span)


class KeepFailedTraces(SpanProcessor):
    """Sampled spans go straight to ``exporting``; unsampled ones wait for their trace's local root
    and go too when it failed (the example failed in this process)."""

    def __init__(self, exporting: SpanProcessor) -> None:
        self._exporting = exporting
        self._lock = threading.Lock()
        # trace id -> its spans ended so far
        self._undecided: OrderedDict[int, list[ReadableSpan]] = OrderedDict()

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        return

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        if context.trace_flags.sampled:
            self._exporting.on_end(span)
            return
        local_root = span.parent is None or span.parent.is_remote
        with self._lock:
            spans = self._undecided.pop(context.trace_id, [])
            spans.append(span)
            if not local_root:
                self._undecided[context.trace_id] = spans
                while len(self._undecided) > MAX_UNDECIDED_TRACES:
                    self._undecided.popitem(last=False)
                return
        # The local root's status is the example's outcome here: an inner span may fail and be
        # recovered from (a parse failure answered by the JSON fallback, a tool error the agent
        # observed), which is not a failed example.
        if span.status.status_code is StatusCode.ERROR:
            for kept in spans:
                self._exporting.on_end(kept)

    def shutdown(self) -> None:
        self._exporting.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporting.force_flush(timeout_millis)


class CountedExporter(SpanExporter):
    """Wraps an exporter: failures are counted (``dspex_trace_export_errors_total``) and logged at
    most once a minute; nothing raises out of an export."""

    def __init__(self, inner: SpanExporter, where: str) -> None:
        self._inner = inner
        self._where = where
        self._last_logged = -LOG_EVERY_S
        self._failed_since_log = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        reason = "the receiver did not accept them"
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # an exporter's bug or a transport error must not end the thread
            result, reason = SpanExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        if result is not SpanExportResult.SUCCESS:
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
    provider = TracerProvider(resource=resource, sampler=keepable_sampler(ratio), shutdown_on_exit=False)
    batches = _ExportAll(
        CountedExporter(exporter, where),
        schedule_delay_millis=500,
        export_timeout_millis=settings.export_timeout_s * 1000,
    )
    keeper = KeepFailedTraces(batches)
    provider.add_span_processor(keeper)
    return provider, Recorder(provider.get_tracer("dspex"), keeper, resource)
