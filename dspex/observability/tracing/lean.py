"""Spans of unsampled traces: plain objects, exported only when their part of the example failed.

At the default ratio 99 of 100 examples are not sampled, so what an unsampled span costs is most
of what tracing costs. A :class:`LeanSpan` never touches the OpenTelemetry SDK (no sampler, no id
generator, no span processor, no context attach): it is a name, two timestamps, the few attributes
its caller gave, and a reference to its parent. Its children are started from it directly
(:meth:`LeanSpan.child`), found through :data:`UNSAMPLED` (the unsampled span current here), so
deciding "not sampled" happens once per trace part: at its local root. Inside an example's own
span the callback makes no children at all (it is not told of the calls made there, see
:mod:`~dspex.observability.tracing.callback`); spans :attr:`LeanSpan.after` makes stand in for
them when the span is exported.

A *part* is what one process ran of an unsampled trace under one local root (an example's module
call, a worker's task span: a span whose parent is remote or absent). Its spans are kept in memory
until that root ends. If the root failed (status ERROR: the example failed here) the whole part is
exported; otherwise it is dropped. An inner span that failed and was recovered from (a parse
failure the JSON fallback answered) does not count: the root decides.
"""

from __future__ import annotations

import contextvars
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

__all__ = [
    "SAMPLED_EXAMPLE",
    "UNSAMPLED",
    "Keep",
    "LeanSpan",
    "Secrets",
    "Source",
    "current",
    "new_span_id",
    "new_trace_id",
    "sampled_now",
    "traceparent_of",
]

UNSAMPLED: contextvars.ContextVar[LeanSpan | None] = contextvars.ContextVar(
    "dspex_trace_unsampled", default=None
)
"""The unsampled span current here (lean spans are never attached to OpenTelemetry's context)."""

SAMPLED_EXAMPLE: contextvars.ContextVar[int] = contextvars.ContextVar(
    "dspex_trace_sampled_example", default=0
)
"""The span id of the evaluation whose example runs here, sampled already (Evaluate drew it before
the example's call, :mod:`~dspex.observability.tracing.examples`): its call is not drawn again."""

Secrets = Callable[[], tuple[str, ...]]
"""The secret values a span's inputs hold, computed only when the span's inputs are exported."""

_UNSET: Final = Status(StatusCode.UNSET)
_NO_INPUTS: Final[Mapping[str, Any]] = {}
# Our own generator: a program that seeds the global one must not steer which examples are kept.
_RANDOM: Final = random.Random(os.urandom(16))
_RANDOM_ID_FLAG: Final = 0x02  # W3C trace-context level 2: the trace id is random


def new_trace_id() -> int:
    """A random, valid 128-bit trace id."""
    return _RANDOM.getrandbits(128) or 1


def new_span_id() -> int:
    """A random, valid 64-bit span id."""
    return _RANDOM.getrandbits(64) or 1


def sampled_now(ratio: float) -> bool:
    """A new trace's sampling decision: kept with probability ``ratio``."""
    return ratio >= 1.0 or (ratio > 0.0 and _RANDOM.random() < ratio)


class Keep:
    """Where the spans of a failed part go (the batch processor), with what every span carries."""

    def __init__(self, emit: Callable[[ReadableSpan], None], resource: Resource) -> None:
        self.emit, self.resource = emit, resource
        self.scope = InstrumentationScope("dspex")


class _Part:
    """The spans one local root's part of an unsampled trace ended so far."""

    __slots__ = ("ended", "kept")

    def __init__(self) -> None:
        self.ended: list[LeanSpan] | None = []  # None once the root has ended (decided)
        self.kept = False


class Source(Protocol):
    """What a kind of call's span is named and holds, computed from the call only when needed (the
    callback's module, LM, adapter and tool calls): most unsampled spans never need any of it."""

    def name(self, instance: Any) -> str:
        """The span's name."""
        ...

    def attributes(self, instance: Any) -> dict[str, Any]:
        """Its attributes known at the start (kind, model...): small, no contents."""
        ...

    def contents(self, instance: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Its input attributes (values, messages): for sampled spans and failed ones only."""
        ...

    def secrets(self, instance: Any, inputs: Mapping[str, Any]) -> tuple[str, ...]:
        """The secret values the call holds (its attributes, and its callees', must not)."""
        ...


class LeanSpan(NonRecordingSpan):
    """A span of an unsampled trace (see the module's docstring)."""

    # What every span sets lives in slots; what few spans ever set is a class default (the instance
    # gets its own value when one is set): fewer stores per span, and most spans are unsampled ones.
    __slots__ = (
        "attempts",
        "end_time",
        "flags",
        "inputs",
        "instance",
        "keep",
        "parent",
        "part",
        "source",
        "start_time",
        "token",
        "trace_id",
    )

    _context: SpanContext | None = None  # type: ignore[assignment]  # made on demand
    _span_id = 0  # drawn on demand: most spans never need it
    label: str | None = None
    kind: SpanKind = SpanKind.INTERNAL
    links: Sequence[Link] = ()
    static: dict[str, Any] | None = None  # attributes given at the start
    secrets: Secrets | None = None
    extra: dict[str, Any] | None = None  # attributes set after the start
    events: list[Event] | None = None
    status: Status = _UNSET
    # spans made only if this one is exported: its children that were never announced (the LM
    # calls of an unsampled example, see dspex.observability.tracing.recalled)
    after: Callable[[LeanSpan], Iterable[ReadableSpan]] | None = None

    def __init__(
        self,
        keep: Keep,
        trace_id: int,
        flags: int,
        parent: LeanSpan | SpanContext | None,
        name: str | None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        start_time: int | None = None,
        secrets: Secrets | None = None,
    ) -> None:
        self.keep, self.trace_id, self.flags, self.parent = keep, trace_id, flags, parent
        if name is not None:
            self.label = name
        if kind is not SpanKind.INTERNAL:
            self.kind = kind
        if attributes is not None:
            self.static = attributes
        if links:
            self.links = links
        if secrets is not None:
            self.secrets = secrets
        self.source: Source | None = None
        self.instance: Any = None
        self.inputs: Mapping[str, Any] = _NO_INPUTS
        self.start_time = start_time if start_time is not None else time.time_ns()
        self.end_time: int | None = None
        self.part: _Part = parent.part if isinstance(parent, LeanSpan) else _Part()
        self.token: contextvars.Token[LeanSpan | None] | None = None  # while current (the callback's)
        self.attempts = 0  # of an LM call

    @classmethod
    def described(
        cls, parent: LeanSpan, source: Source, instance: Any, inputs: Mapping[str, Any]
    ) -> LeanSpan:
        """A span under ``parent`` for a call ``source`` describes (name and attributes made only
        if it is exported)."""
        span = cls.__new__(cls)
        span.keep, span.trace_id, span.flags, span.parent = parent.keep, parent.trace_id, parent.flags, parent
        span.source, span.instance, span.inputs = source, instance, inputs
        span.start_time, span.end_time = time.time_ns(), None
        span.part, span.token, span.attempts = parent.part, None, 0
        return span

    @classmethod
    def example(
        cls,
        keep: Keep,
        links: Sequence[Link],
        source: Source,
        instance: Any,
        inputs: Mapping[str, Any],
        start_time: int | None = None,
    ) -> LeanSpan:
        """The root of a new trace for an example of an evaluation (``links``: to the evaluation's
        span), for a call ``source`` describes: :meth:`described`'s economy for the one span an
        unsampled example costs. ``start_time``: when it started (None: now)."""
        span = cls.__new__(cls)
        span.keep, span.trace_id, span.flags, span.parent = keep, new_trace_id(), _RANDOM_ID_FLAG, None
        span.source, span.instance, span.inputs = source, instance, inputs
        span.links = links
        span.start_time, span.end_time = start_time if start_time is not None else time.time_ns(), None
        span.part, span.token, span.attempts = _Part(), None, 0
        return span

    @property
    def span_id(self) -> int:
        """This span's id (drawn when first asked for)."""
        if not self._span_id:
            self._span_id = new_span_id()
        return self._span_id

    @property
    def name(self) -> str:
        """This span's name."""
        if self.label is None:
            self.label = self.source.name(self.instance) if self.source is not None else "span"
        return self.label

    @classmethod
    def new_trace(
        cls,
        keep: Keep,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        start_time: int | None = None,
    ) -> LeanSpan:
        """The root of a new trace that was not sampled."""
        return cls(keep, new_trace_id(), _RANDOM_ID_FLAG, None, name, kind, attributes, links, start_time)

    @classmethod
    def under(
        cls,
        keep: Keep,
        parent: SpanContext,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        start_time: int | None = None,
    ) -> LeanSpan:
        """A span under an unsampled span of another process (a ``traceparent``) or of another
        tracer: the local root of its part."""
        flags = int(parent.trace_flags)
        return cls(keep, parent.trace_id, flags, parent, name, kind, attributes, links, start_time)

    def child(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        start_time: int | None = None,
        secrets: Secrets | None = None,
    ) -> LeanSpan:
        """A span under this one (same trace, not sampled either)."""
        return LeanSpan(
            self.keep, self.trace_id, self.flags, self, name, kind, attributes, links, start_time, secrets
        )

    # -- the span API ------------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        if self._context is None:
            self._context = SpanContext(self.trace_id, self.span_id, False, TraceFlags(self.flags))
        return self._context

    def is_recording(self) -> bool:
        return True  # attributes set on it are kept, for when its part is exported

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.extra is None:
            self.extra = {}
        self.extra.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        if self.extra is None:
            self.extra = {}
        self.extra[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if self.events is None:
            self.events = []
        self.events.append(Event(name, attributes, timestamp))

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self.status = status if isinstance(status, Status) else Status(status, description)

    def update_name(self, name: str) -> None:
        self.label = name

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time if end_time is not None else time.time_ns()
        part = self.part
        ended = part.ended
        if ended is None:  # ended after its local root: follows the root's decision
            if part.kept:
                self._export()
            return
        ended.append(self)
        if isinstance(self.parent, LeanSpan):
            return  # not the local root: its part is decided when the root ends
        part.ended = None  # also breaks the part <-> span reference cycle for the collector
        # the local root's status is this part's outcome: an inner failure may have been recovered
        if self.status.status_code is StatusCode.ERROR:
            part.kept = True
            for span in ended:
                span._export()

    def _export(self) -> None:
        self.keep.emit(self.readable())
        if self.after is not None:
            for span in self.after(self):
                self.keep.emit(span)

    # -- for the callback and the Kafka hop --------------------------------------------------

    def all_secrets(self) -> tuple[str, ...]:
        """The secrets of this span's and its lean ancestors' inputs (what its attributes must not hold)."""
        found: list[str] = []
        span: LeanSpan | SpanContext | None = self
        while isinstance(span, LeanSpan):
            if span.secrets is not None:
                found += span.secrets()
            if span.source is not None:
                found += span.source.secrets(span.instance, span.inputs)
            span = span.parent
        return tuple(found)

    def traceparent(self) -> bytes:
        """This span's W3C ``traceparent`` header value."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}".encode()

    def readable(self) -> ReadableSpan:
        """This span as the exporter takes it."""
        parent, source = self.parent, self.source
        attributes = dict(self.static or {})
        if source is not None and self.static is None:
            attributes.update(source.attributes(self.instance))
        attributes.update(self.extra or {})
        return ReadableSpan(
            name=self.name,
            context=self.get_span_context(),
            parent=parent.get_span_context() if isinstance(parent, LeanSpan) else parent,
            resource=self.keep.resource,
            attributes=attributes,
            events=self.events or (),
            links=self.links,
            kind=self.kind,
            status=self.status,
            start_time=self.start_time,
            end_time=self.end_time,
            instrumentation_scope=self.keep.scope,
        )

    def __repr__(self) -> str:
        return f"LeanSpan({self.name!r}, trace_id=0x{self.trace_id:032x}, span_id=0x{self.span_id:016x})"


@contextmanager
def current(span: Any) -> Iterator[None]:
    """``span`` is the current span inside the block: an unsampled one in :data:`UNSAMPLED` only,
    any other in OpenTelemetry's context (with no unsampled one current)."""
    if isinstance(span, LeanSpan):
        lean_token = UNSAMPLED.set(span)
        try:
            yield
        finally:
            UNSAMPLED.reset(lean_token)
        return
    token = otel_context.attach(trace.set_span_in_context(span))
    lean_token = UNSAMPLED.set(None)
    try:
        yield
    finally:
        UNSAMPLED.reset(lean_token)
        otel_context.detach(token)


def traceparent_of(span: Any) -> bytes:
    """The W3C ``traceparent`` header value of any span (the messages produced under it carry it)."""
    if isinstance(span, LeanSpan):
        return span.traceparent()
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}".encode()
