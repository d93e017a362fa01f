"""The callback that turns the programming model's events into OpenInference spans.

One span per instrumented call: a module's (``CHAIN``; the span is current while the call runs, so
what it calls nests under it), an LM call (``LLM``: model, messages, completion, invocation
parameters, tokens, cost, latency, attempts and retries), a tool call (``TOOL``), an adapter's
format and parse (``CHAIN``), a code interpreter's execution (``TOOL``), an evaluation and a compile
(``CHAIN``). A module call made directly under an evaluation starts a trace of its own, linked to the
evaluation's span: one trace per example, each sampled (and kept when it fails) on its own.

A local evaluation takes its examples' sampling from :meth:`TracingCallback.examples_of` before
calling their program: an example that is not sampled (99 in 100 at the default ratio) is not
heard at all (:mod:`~dspex.observability.tracing.examples`). Elsewhere, an unsampled example (a
worker's task, a program called directly) is heard once: its own module
call, whose span is a :class:`~dspex.observability.tracing.lean.LeanSpan`. For the calls it makes,
this callback is muted (:func:`dspex.utils.callback.muted`): the seam finds no callback listening
and takes the path it takes with tracing off. If the example fails, its span is exported with the
error and the inputs, and its LM calls as child spans made from the LM call log
(:mod:`~dspex.observability.tracing.recalled`); its inner modules, adapter format and parse and
tool calls were never heard and have no span.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, Status, StatusCode, Tracer

from dspex.lm.events import LMAttempt, LMRequest
from dspex.observability.tracing.attributes import scrub, scrubbed
from dspex.observability.tracing.lean import SAMPLED_EXAMPLE, UNSAMPLED, LeanSpan, Source
from dspex.observability.tracing.provider import Recorder
from dspex.observability.tracing.recalled import Recall
from dspex.observability.tracing.sources import (
    CODE,
    FORMAT,
    KIND,
    LM,
    MODULE,
    PARSE,
    TOOL_CALL,
    lm_outputs,
    output,
)
from dspex.utils.callback import BaseCallback, ExampleHearing, muted, unmuted

__all__ = ["KIND", "TracingCallback", "end_lean"]

_CHAIN: Final = OpenInferenceSpanKindValues.CHAIN.value


class _Open:
    """A span of a sampled trace (or of a plain tracer) this callback opened: what ending it takes."""

    __slots__ = ("attempts", "lean_token", "sampled", "secrets", "secrets_token", "span", "token", "unsent")

    def __init__(
        self,
        span: Span,
        token: object,
        lean_token: contextvars.Token[LeanSpan | None] | None,
        secrets: tuple[str, ...],
        secrets_token: contextvars.Token[tuple[str, ...]] | None,
        sampled: bool,
        unsent: tuple[Source, Any, Mapping[str, Any]] | None,  # unsampled: its inputs, if it fails
    ) -> None:
        self.span, self.token, self.lean_token = span, token, lean_token
        self.secrets, self.secrets_token = secrets, secrets_token
        self.sampled, self.unsent = sampled, unsent
        self.attempts = 0  # of an LM call


class _Hushed:
    """An example that is not sampled, running: its span, the muting of tracing for the calls it
    makes, and the log of its LM calls (what its export adds if it fails)."""

    __slots__ = ("recall", "span", "token")

    def __init__(self, span: LeanSpan, token: contextvars.Token[BaseCallback | None]) -> None:
        self.span, self.token, self.recall = span, token, Recall()


# Secret values met in the calls running here (an LM's key, a secret-named input): the spans of what
# they call scrub them too, e.g. from the prompt a secret-named input field was formatted into.
_SECRETS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("dspex_trace_secrets", default=())


class TracingCallback(BaseCallback):
    """Spans for modules, LM calls, adapters, tools, interpreters, evaluations and compiles.

    ``dspex.configure(tracing=...)`` installs one; it can also be installed like any callback,
    with a tracer of your own provider: ``dspex.configure(callbacks=[TracingCallback(tracer)])``
    (then unsampled traces are not recorded at all, failed or not).

    Spans of sampled traces carry their contents (inputs, outputs, prompt and completion messages).
    An unsampled example is heard at its own call only (see the module's docstring): a
    :class:`~dspex.observability.tracing.lean.LeanSpan` holding references to the call, and a mute
    of this callback for what the call runs. If the example fails, that span is exported with its
    inputs and the error, and its LM calls (from the LM call log) as ``LLM`` spans under it: model,
    messages, completion, tokens, cost, duration, outcome, and the error of a call that failed.
    Calls made under an unsampled span that is not an example (an evaluation's or a compile's own
    LM calls) are lean spans of their own, kept if that span's part fails.
    """

    def __init__(self, tracer: Tracer | Recorder) -> None:
        # a Recorder (what configure(tracing=...) gives) also records unsampled traces, lean, so
        # that failed examples are kept; a plain tracer follows its own provider's sampling
        self._recorder = tracer if isinstance(tracer, Recorder) else None
        self._start_span = tracer.start if isinstance(tracer, Recorder) else tracer.start_span
        self._open: dict[str, _Open | LeanSpan] = {}
        self._hushed: dict[str, _Hushed] = {}  # the unsampled examples running, by call id
        self._evaluations: set[int] = set()  # span ids of evaluation spans open now
        self._lock = threading.Lock()

    # -- modules, evaluations, compiles ----------------------------------------------------------

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._call(call_id, MODULE, instance, inputs, example=True)

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end(call_id, output, outputs, exception)

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        devset = inputs.get("devset") or getattr(instance, "devset", None) or ()
        attributes: dict[str, Any] = {KIND: _CHAIN, "dspex.evaluate.examples": len(devset)}
        span = self._start(call_id, "Evaluate", attributes)
        with self._lock:
            self._evaluations.add(span.get_span_context().span_id)

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        score = getattr(outputs, "score", None)
        opened = self._open.get(call_id)
        if opened is not None:
            with self._lock:
                self._evaluations.discard(_span_of(opened).get_span_context().span_id)
        scored = {"dspex.evaluate.score": float(score)} if isinstance(score, int | float) else None
        self._end(call_id, None, None, exception, scored)

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start(call_id, f"{type(instance).__name__}.compile", {KIND: _CHAIN})

    def on_compile_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end(call_id, None, None, exception)

    def examples_of(self, program: Any) -> ExampleHearing | None:
        """An evaluation's examples, when the evaluation running here is one this callback heard
        and its program a module: each example's sampling is drawn before its program's call, and
        an unsampled one is not announced to this callback at all (see
        :mod:`~dspex.observability.tracing.examples`)."""
        from dspex.primitives import Module

        recorder = self._recorder
        if recorder is None or not isinstance(program, Module):
            return None
        evaluation = (UNSAMPLED.get() or trace.get_current_span()).get_span_context()
        if not evaluation.is_valid or evaluation.span_id not in self._evaluations:
            return None
        from dspex.observability.tracing.examples import Examples

        return Examples(self, recorder, evaluation, program)

    # -- LM calls --------------------------------------------------------------------------------

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._call(call_id, LM, instance, inputs)

    def on_lm_attempt(self, call_id: str | None, instance: Any, attempt: LMAttempt) -> None:
        opened = self._open.get(call_id) if call_id is not None else None
        if opened is None:
            return
        opened.attempts += 1
        if attempt.outcome == "ok" and (isinstance(opened, LeanSpan) or not opened.sampled):
            return  # lean: an unsampled trace keeps the attempts that went wrong
        event: dict[str, Any] = {
            "outcome": attempt.outcome,
            "duration_s": attempt.duration_s,
            "queue_wait_s": attempt.queue_wait_s,
        }
        if attempt.status is not None:
            event["http.status_code"] = attempt.status
        if attempt.error is not None:
            event["error"] = attempt.error
        _span_of(opened).add_event("lm.attempt", event)

    def on_lm_request(self, call_id: str | None, instance: Any, request: LMRequest) -> None:
        opened = self._open.get(call_id) if call_id is not None else None
        if opened is None:
            return
        attempts = opened.attempts
        if request.outcome != "error" and (isinstance(opened, LeanSpan) or not opened.sampled):
            return  # lean: an unsampled trace keeps the usage of failed calls only
        _span_of(opened).set_attributes(
            {
                SpanAttributes.LLM_TOKEN_COUNT_PROMPT: request.prompt_tokens,
                SpanAttributes.LLM_TOKEN_COUNT_COMPLETION: request.completion_tokens,
                SpanAttributes.LLM_TOKEN_COUNT_TOTAL: request.prompt_tokens + request.completion_tokens,
                SpanAttributes.LLM_COST_TOTAL: request.cost_usd,
                "dspex.lm.latency_s": request.duration_s,
                "dspex.lm.outcome": request.outcome,
                "dspex.lm.attempts": attempts,
                "dspex.lm.retries": max(attempts - 1, 0),
                "dspex.lm.endpoint": _endpoint(request.endpoint),
            }
        )

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        self._end(call_id, lm_outputs, outputs, exception)

    # -- adapters, tools, interpreters -------------------------------------------------------------

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._call(call_id, FORMAT, instance, inputs)

    def on_adapter_format_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end(call_id, output, outputs, exception)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._call(call_id, PARSE, instance, inputs)

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end(call_id, output, outputs, exception)

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._call(call_id, TOOL_CALL, instance, inputs)

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        self._end(call_id, output, outputs, exception)

    def on_interpreter_execute_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._call(call_id, CODE, instance, inputs)

    def on_interpreter_execute_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end(call_id, output, outputs, exception)

    # -- spans -----------------------------------------------------------------------------------

    def _call(
        self, call_id: str, source: Source, instance: Any, inputs: Mapping[str, Any], *, example: bool = False
    ) -> None:
        recorder = self._recorder
        lean = UNSAMPLED.get() if recorder is not None else None
        sampled: bool | None = None
        if lean is not None and recorder is not None:
            span, sampled = self._unsampled(recorder, lean, source, instance, inputs, example)
            if span is not None:
                inherited = _SECRETS.get()
                if inherited:
                    span.secrets = lambda: inherited
                span.token = UNSAMPLED.set(span)
                self._opened(call_id, span, example)
                return
        self._start(
            call_id,
            source.name(instance),
            source.attributes(instance),
            source,
            instance,
            inputs,
            example,
            sampled,
        )

    def _unsampled(
        self,
        recorder: Recorder,
        lean: LeanSpan,
        source: Source,
        instance: Any,
        inputs: Mapping[str, Any],
        example: bool,
    ) -> tuple[LeanSpan | None, bool | None]:
        """Inside the unsampled span ``lean``: the call's span when it is not sampled either (None
        for an example of an evaluation that is), and the sampling decision drawn for it, if any."""
        # (a span id is drawn only when an evaluation is open to compare it with)
        if not (example and self._evaluations and lean.span_id in self._evaluations):
            # one plain object holding references to the call, and no OpenTelemetry call at all
            return LeanSpan.described(lean, source, instance, inputs), None
        if SAMPLED_EXAMPLE.get() == lean.span_id or recorder.draw():
            return None, True  # a sampled example of an unsampled evaluation
        # an example of an unsampled evaluation, not sampled either (an evaluation's examples are
        # mostly decided before they are announced, see dspex.observability.tracing.examples):
        # a trace of its own, linked to the evaluation
        links = (Link(lean.get_span_context()),)
        return LeanSpan.example(recorder.keep, links, source, instance, inputs), False

    def _start(
        self,
        call_id: str,
        name: str,
        attributes: dict[str, Any],
        source: Source | None = None,
        instance: Any = None,
        inputs: Mapping[str, Any] | None = None,
        example: bool = False,
        sampled: bool | None = None,
    ) -> Span:
        """A span that is sampled, the root of an unsampled trace, or from a plain tracer.
        ``sampled``: the sampling decision already drawn for it, if it starts a new trace."""
        lean = UNSAMPLED.get() if self._recorder is not None else None
        parent_context: otel_context.Context | None = None
        links: list[Link] = []
        if example:
            parent = (lean or trace.get_current_span()).get_span_context()
            if parent.is_valid and parent.span_id in self._evaluations:
                # an example of an evaluation: a trace of its own, sampled and kept on its own
                parent_context, links = otel_context.Context(), [Link(parent)]
                if sampled is None and SAMPLED_EXAMPLE.get() == parent.span_id:
                    sampled = True  # drawn by the evaluation before the call
        inherited = _SECRETS.get()
        if lean is not None:
            inherited = (*inherited, *lean.all_secrets())
        if sampled is None or self._recorder is None:
            span = self._start_span(name, context=parent_context, attributes=attributes, links=links)
        else:  # drawn already (by _call)
            span = self._recorder.start(
                name, context=parent_context, attributes=attributes, links=links, sampled=sampled
            )
        if isinstance(span, LeanSpan):
            if source is not None:
                span.source, span.instance, span.inputs = source, instance, inputs or {}
            span.secrets = (lambda: inherited) if inherited else None
            span.token = UNSAMPLED.set(span)
            self._opened(call_id, span, example)
            return span
        own = source.secrets(instance, inputs or {}) if source is not None else ()
        secret_values = (*inherited, *own)
        secrets_token = _SECRETS.set(secret_values) if own else None
        sampled = span.get_span_context().trace_flags.sampled
        if sampled and source is not None:
            span.set_attributes(scrubbed(source.contents(instance, inputs or {}), secret_values))
        token = otel_context.attach(trace.set_span_in_context(span))
        lean_token = UNSAMPLED.set(None) if lean is not None else None
        unsent = None if sampled or source is None else (source, instance, inputs or {})
        self._open[call_id] = _Open(span, token, lean_token, secret_values, secrets_token, sampled, unsent)
        return span

    def _opened(self, call_id: str, span: LeanSpan, example: bool) -> None:
        if not example:
            self._open[call_id] = span
            return
        # An example (a module call) that is not sampled: the calls it makes are not announced to
        # this callback at all, as if tracing were off; its LM calls are found in the LM call log
        # if it fails (see dspex.observability.tracing.recalled).
        self._hushed[call_id] = _Hushed(span, muted(self))

    def _end(
        self,
        call_id: str,
        contents: Callable[[Any], dict[str, Any]] | None,
        outputs: Any,
        exception: BaseException | None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        opened = self._open.pop(call_id, None)
        if opened is None:
            hushed = self._hushed.pop(call_id, None)
            if hushed is not None:
                _end_hushed(hushed, exception)
            return
        if isinstance(opened, LeanSpan):
            if exception is None and not attributes:  # most spans of an unsampled trace
                opened.end()
                token, opened.token = opened.token, None
                if token is not None:
                    _reset(token)
            else:
                end_lean(opened, attributes, exception)
            return
        span, secrets = opened.span, opened.secrets
        found = dict(attributes or {})
        if opened.sampled and contents is not None and exception is None:
            found.update(contents(outputs))
        elif exception is not None and opened.unsent is not None:
            source, instance, inputs = opened.unsent
            found.update(source.contents(instance, inputs))  # a failure is kept: say what it was given
        if found:
            span.set_attributes(scrubbed(found, secrets))
        if exception is not None:
            _record_failure(span, exception, secrets)
        span.end()
        otel_context.detach(opened.token)  # type: ignore[arg-type]  # attach's token, opaque
        if opened.lean_token is not None:
            _reset(opened.lean_token)
        if opened.secrets_token is not None:
            _SECRETS.reset(opened.secrets_token)

    def __repr__(self) -> str:
        return "TracingCallback()"


def _span_of(opened: _Open | LeanSpan) -> Span:
    return opened if isinstance(opened, LeanSpan) else opened.span


def _end_hushed(hushed: _Hushed, exception: BaseException | None) -> None:
    unmuted(hushed.token)
    span, recall = hushed.span, hushed.recall
    recall.close(span)
    span.after = recall.spans
    end_lean(span, None, exception)


def end_lean(span: LeanSpan, attributes: dict[str, Any] | None, exception: BaseException | None) -> None:
    """End an unsampled span: if ``exception`` failed it, with the inputs of its call and the error
    (what keeps its part, when it is the part's root)."""
    if exception is not None:
        # kept if its example failed: what it was given, without any secret of it or its callers
        secrets = span.all_secrets() + _SECRETS.get()
        found = dict(attributes or {})
        if span.source is not None:
            found.update(span.source.contents(span.instance, span.inputs))
        span.set_attributes(scrubbed(found, secrets))
        _record_failure(span, exception, secrets)
    elif attributes:
        span.set_attributes(attributes)  # numbers (an evaluation's score)
    span.end()
    if span.token is not None:
        _reset(span.token)
        span.token = None


def _reset(token: contextvars.Token[LeanSpan | None]) -> None:
    try:  # noqa: SIM105  (contextlib.suppress would cost an object per span)
        UNSAMPLED.reset(token)
    except ValueError:  # ended in another context than it started in (gone now)
        pass


def _record_failure(span: Span, exception: BaseException, secrets: Iterable[str]) -> None:
    if isinstance(exception, asyncio.CancelledError):
        span.set_attribute("dspex.cancelled", True)  # stopped from outside: not the example's failure
        return
    message = scrub(f"{type(exception).__name__}: {exception}", secrets)
    span.set_status(Status(StatusCode.ERROR, message))
    span.add_event(
        "exception", {"exception.type": type(exception).__qualname__, "exception.message": message}
    )


def _endpoint(url: str) -> str:
    # an API base with user:password@ in it keeps the host and path only
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url.rpartition("@")[2]
