"""An example's trace across Kafka: the client starts it, the workers continue it.

The client's submission gives each task a root span of its own (``dspex.example``, one trace per
example, sampled on its own) and puts its W3C ``traceparent`` in the task's headers. A predictor
continues that trace for the task (``dspex.predict``: the program's spans nest under it) and puts its
own span's ``traceparent`` on the prediction; the scorer continues it once more (``dspex.score``, an
``EVALUATOR`` span) and puts its span's on the score, which the aggregator continues last
(``dspex.aggregate``, see :mod:`dspex.processors.aggregate_spans`). The sampling decision travels
in the header's flags; a part that fails in a worker is kept there even when the example was not
sampled (see :mod:`dspex.observability.tracing`).

Everything here costs one check when tracing is off.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Final

from dspex.observability.tracing import Tracing, active
from dspex.schemas.headers import TRACEPARENT, traceparent_from_headers

__all__ = ["JOB_SPAN", "TaskSpan", "continued", "job_submitted", "submitted"]

_EXAMPLE_ATTRIBUTES: Final = (
    ("dspex.job_id", "job_id"),
    ("dspex.candidate_id", "candidate_id"),
    ("dspex.example_index", "example_index"),
    ("dspex.task_id", "task_id"),
)


JOB_SPAN: Final = "dspex.job"
# The span context of the job being published here: each example's trace links to it.
_JOB: contextvars.ContextVar[Any] = contextvars.ContextVar("dspex_trace_job", default=None)


def job_submitted(job: Any) -> AbstractContextManager[None]:
    """Around publishing ``job``: its span (``dspex.job``, always kept: one per job), whose
    ``traceparent`` the job record produced inside carries (the aggregator's span of the job's end
    is its child) and which the example traces started inside link to (nothing when tracing is
    off)."""
    tracing = active()
    if tracing is None:
        return nullcontext()
    return _job_submitted(tracing, job)


@contextmanager
def _job_submitted(tracing: Tracing, job: Any) -> Iterator[None]:
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    from dspex.observability.tracing.callback import KIND

    attributes: dict[str, Any] = {KIND: "CHAIN", **_ids(job)}
    span = tracing.recorder.start(JOB_SPAN, context=Context(), kind=SpanKind.PRODUCER, attributes=attributes)
    token = _JOB.set(span.get_span_context())
    header = TRACEPARENT.set(_traceparent(span))  # the job record produced inside carries the span
    try:
        yield
    finally:
        TRACEPARENT.reset(header)
        _JOB.reset(token)
        span.end()


def submitted(task: Any) -> AbstractContextManager[None]:
    """Around producing ``task``: a new trace for its example whose ``traceparent`` the task's
    headers carry (nothing when tracing is off)."""
    tracing = active()
    if tracing is None:
        return nullcontext()
    return _submitted(tracing, task)


@contextmanager
def _submitted(tracing: Tracing, task: Any) -> Iterator[None]:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, SpanKind

    from dspex.observability.tracing.callback import KIND

    attributes: dict[str, Any] = {KIND: "CHAIN", **_ids(task)}
    job = _JOB.get()
    links = [Link(job)] if job is not None else []
    span = tracing.recorder.start(
        "dspex.example", context=Context(), kind=SpanKind.PRODUCER, attributes=attributes, links=links
    )
    token = TRACEPARENT.set(_traceparent(span))
    try:
        yield
    finally:
        TRACEPARENT.reset(token)
        span.end()


class TaskSpan:
    """The span of the task (or prediction) a worker is handling; None-safe helpers for the processor."""

    __slots__ = ("span",)

    def __init__(self, span: Any = None) -> None:
        self.span = span

    def failed(self, reason: str) -> None:
        """The example failed here (an error prediction or score): its trace is kept."""
        if self.span is not None:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_status(Status(StatusCode.ERROR, reason))

    def set(self, name: str, value: str | int | float | bool) -> None:
        """One attribute on the span (the score, an outcome)."""
        if self.span is not None:
            self.span.set_attribute(name, value)


_OFF: Final = TaskSpan()


def continued(
    message: Any, name: str, value: Any, *, evaluator: bool = False
) -> AbstractContextManager[TaskSpan]:
    """Around handling a consumed ``message`` (its decoded ``value``): a span ``name`` continuing the
    trace its ``traceparent`` header names, current while the block runs, whose own ``traceparent``
    the messages produced inside carry. ``evaluator``: an OpenInference ``EVALUATOR`` span (a metric)."""
    tracing = active()
    if tracing is None:
        return nullcontext(_OFF)
    return _continued(tracing, message, name, value, evaluator)


@contextmanager
def _continued(tracing: Tracing, message: Any, name: str, value: Any, evaluator: bool) -> Iterator[TaskSpan]:
    from opentelemetry.trace import SpanKind

    from dspex.observability.tracing.callback import KIND, _record_failure
    from dspex.observability.tracing.lean import current

    traceparent = traceparent_from_headers(_headers(message))
    attributes: dict[str, Any] = {KIND: "EVALUATOR" if evaluator else "CHAIN", **_ids(value)}
    span = tracing.recorder.continued(name, traceparent, SpanKind.CONSUMER, attributes)
    with current(span):
        header_token = TRACEPARENT.set(_traceparent(span))
        try:
            yield TaskSpan(span)
        except BaseException as exc:
            _record_failure(span, exc, ())
            raise
        finally:
            TRACEPARENT.reset(header_token)
            span.end()


def _headers(message: Any) -> Any:
    headers = getattr(message, "headers", None)
    try:
        return headers() if callable(headers) else headers
    except Exception:  # a broken message: no parent, a new trace
        return None


def _ids(value: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for attribute, field in _EXAMPLE_ATTRIBUTES:
        item = getattr(value, field, None)
        if isinstance(item, str | int):
            found[attribute] = item
    return found


def _traceparent(span: Any) -> bytes:
    from dspex.observability.tracing.lean import traceparent_of

    return traceparent_of(span)
