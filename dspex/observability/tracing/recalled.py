"""The LM calls of an unsampled example that failed, made into spans after the fact.

Inside an example that is not sampled, tracing hears the example's own call only (its module's
start and end): what that call runs is not announced to it (:func:`dspex.utils.callback.muted`),
which is what lets an unsampled example cost about what it costs with tracing off. What its LM
calls were is known anyway: every call through :func:`dspex.lm.base.call_lm` goes into the LM call
log open around it (:mod:`dspex.lm.call_log`: a predictor's, per task, or else one opened for the
example here), holding references to the messages and the answer or the error, with the call's
start and duration. If the example fails, each of its logged calls becomes an ``LLM`` span under
the example's span, built only then (:class:`Recall`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from openinference.semconv.trace import SpanAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from dspex.lm.call_log import LMCall, LMCallLog, current_log, logging_lm_calls
from dspex.observability.tracing.attributes import scrub, scrubbed
from dspex.observability.tracing.lean import LeanSpan, new_span_id
from dspex.observability.tracing.sources import LM, lm_outputs

__all__ = ["Recall"]

_UNSET = Status(StatusCode.UNSET)


class Recall:
    """The LM calls one example makes: the part of the LM call log open here that fills between
    this object's making (the example's start) and :meth:`close` (its end)."""

    __slots__ = ("first", "last", "log", "opened", "unlogged")

    def __init__(self, log: LMCallLog | None = None, first: int | None = None, dropped: int = 0) -> None:
        """The calls ``log`` takes from now on (from its ``first`` call and past ``dropped`` ones, when
        given: an example of a local evaluation, whose worker keeps one log for the examples it
        runs in turn); no ``log``: the one open here, or else one opened here until :meth:`close`."""
        self.opened: AbstractContextManager[LMCallLog] | None = None
        if log is None:
            log = current_log()
            if log is None:  # a predictor opens one per task
                self.opened = logging_lm_calls()
                log = self.opened.__enter__()
        self.log = log
        if first is None:
            first, dropped = len(log.calls), log.dropped
        self.first, self.last, self.unlogged = first, -1, dropped

    def close(self, example: LeanSpan) -> None:
        """``example`` ended: its calls are the log's so far (the log opened for it is closed)."""
        self.last, self.unlogged = len(self.log.calls), self.log.dropped - self.unlogged
        if self.unlogged:  # past the log's cap (dspex.lm.call_log.MAX_LOGGED_CALLS)
            example.set_attribute("dspex.lm.calls_unlogged", self.unlogged)
        if self.opened is not None:
            try:  # noqa: SIM105  (contextlib.suppress would cost an object per example)
                self.opened.__exit__(None, None, None)
            except ValueError:  # ended in another context than it started in (gone now)
                pass
            self.opened = None

    def spans(self, example: LeanSpan) -> Iterator[ReadableSpan]:
        """One ``LLM`` span per logged call, under ``example`` (what its export adds)."""
        calls = self.log.calls[self.first : self.last] if self.last >= 0 else self.log.calls[self.first :]
        # the log times calls with the performance counter: one reading of both clocks places them
        epoch_ns = time.time_ns() - int((time.perf_counter() - self.log.started) * 1e9)
        secrets = example.all_secrets()
        for call in calls:
            yield _lm_span(call, example, epoch_ns, (*secrets, *LM.secrets(call.lm, {})))


def _lm_span(call: LMCall, example: LeanSpan, epoch_ns: int, secrets: tuple[str, ...]) -> ReadableSpan:
    start = epoch_ns + int(call.start_s * 1e9)
    attributes: dict[str, Any] = {
        **LM.attributes(call.lm),
        **LM.contents(call.lm, {"messages": call.messages}),
    }
    attributes["dspex.lm.latency_s"] = call.duration_s
    attributes["dspex.lm.outcome"] = "error" if call.error is not None else "ok"
    status: Status = _UNSET
    events: tuple[Event, ...] = ()
    if call.response is not None:
        usage = call.response.usage
        attributes.update(lm_outputs([call.response.text]))
        attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] = usage.prompt_tokens
        attributes[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION] = usage.completion_tokens
        attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] = usage.prompt_tokens + usage.completion_tokens
        attributes[SpanAttributes.LLM_COST_TOTAL] = usage.cost_usd
        attributes["dspex.lm.cached"] = call.response.cached
    if call.error is not None:
        message = scrub(f"{type(call.error).__name__}: {call.error}", secrets)
        status = Status(StatusCode.ERROR, message)
        failure = {"exception.type": type(call.error).__qualname__, "exception.message": message}
        events = (Event("exception", failure, start + int(call.duration_s * 1e9)),)
    return ReadableSpan(
        name=LM.name(call.lm),
        context=SpanContext(example.trace_id, new_span_id(), False, TraceFlags(example.flags)),
        parent=example.get_span_context(),
        resource=example.keep.resource,
        attributes=scrubbed(attributes, secrets),
        events=events,
        kind=SpanKind.INTERNAL,
        status=status,
        start_time=start,
        end_time=start + int(call.duration_s * 1e9),
        instrumentation_scope=example.keep.scope,
    )
