"""The callback that turns the programming model's events into OpenInference spans.

One span per instrumented call: a module's (``CHAIN``; the span is current while the call runs, so
what it calls nests under it), an LM call (``LLM``: model, messages, completion, invocation
parameters, tokens, cost, latency, attempts and retries), a tool call (``TOOL``), an adapter's
format and parse (``CHAIN``), a code interpreter's execution (``TOOL``), an evaluation and a compile
(``CHAIN``). A module call made directly under an evaluation starts a trace of its own, linked to the
evaluation's span: one trace per example, each sampled (and kept when it fails) on its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, NamedTuple

from openinference.semconv.trace import (
    OpenInferenceMimeTypeValues,
    OpenInferenceSpanKindValues,
    SpanAttributes,
)
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, Status, StatusCode, Tracer

from dspex.lm.events import LMAttempt, LMRequest
from dspex.observability.tracing.attributes import (
    INPUT_MESSAGES,
    INVOCATION_PARAMETERS,
    OUTPUT_MESSAGES,
    json_text,
    message_attributes,
    scrub,
    secret_key,
)
from dspex.observability.tracing.provider import Recorder
from dspex.utils.callback import BaseCallback

__all__ = ["TracingCallback"]

KIND: Final = SpanAttributes.OPENINFERENCE_SPAN_KIND
_CHAIN: Final = OpenInferenceSpanKindValues.CHAIN.value
_LLM: Final = OpenInferenceSpanKindValues.LLM.value
_TOOL: Final = OpenInferenceSpanKindValues.TOOL.value
_JSON: Final = OpenInferenceMimeTypeValues.JSON.value
_TEXT: Final = OpenInferenceMimeTypeValues.TEXT.value


Contents = Callable[[], dict[str, Any]]
"""Builds a span's content attributes (input and output values, messages): called only for spans
that are exported with their contents (see :class:`TracingCallback`)."""


class _Open(NamedTuple):
    span: Span
    token: object
    secrets: tuple[str, ...]
    secrets_token: contextvars.Token[tuple[str, ...]] | None
    sampled: bool
    inputs: Contents | None  # of an unsampled span: kept for when it fails


# Secret values met in the calls running here (an LM's key, a secret-named input): the spans of what
# they call scrub them too, e.g. from the prompt a secret-named input field was formatted into.
_SECRETS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("dspex_trace_secrets", default=())


class TracingCallback(BaseCallback):
    """Spans for modules, LM calls, adapters, tools, interpreters, evaluations and compiles.

    ``dspex.configure(tracing=...)`` installs one; it can also be installed like any callback,
    with a tracer of your own provider: ``dspex.configure(callbacks=[TracingCallback(tracer)])``
    (then unsampled traces are not recorded at all, failed or not).

    Spans of sampled traces carry their contents (inputs, outputs, prompt and completion messages).
    Spans of unsampled traces are recorded lean (names, timings, model, status, the usage and
    attempts of failed LM calls), with the inputs of the spans that fail: serializing every prompt
    of the 99% of examples that are dropped would cost more than the rest of tracing together.
    """

    def __init__(self, tracer: Tracer | Recorder) -> None:
        # a Recorder (what configure(tracing=...) gives) also records unsampled traces, lean, so
        # that failed examples are kept; a plain tracer follows its own provider's sampling
        self._start_span = tracer.start if isinstance(tracer, Recorder) else tracer.start_span
        self._open: dict[str, _Open] = {}
        self._attempts: dict[str, int] = {}
        self._evaluations: set[int] = set()  # span ids of evaluation spans open now
        self._lock = threading.Lock()

    # -- modules, evaluations, compiles ----------------------------------------------------------

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        attributes = {KIND: _CHAIN, "dspex.module": type(instance).__qualname__}
        self._start(
            call_id,
            _module_name(instance),
            attributes,
            lambda: _input(inputs),
            _secret_inputs(inputs),
            example=True,
        )

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end(call_id, {}, lambda: _output(outputs), exception)

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
                self._evaluations.discard(opened.span.get_span_context().span_id)
        scored = {"dspex.evaluate.score": float(score)} if isinstance(score, int | float) else {}
        self._end(call_id, scored, None, exception)

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start(call_id, f"{type(instance).__name__}.compile", {KIND: _CHAIN})

    def on_compile_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end(call_id, {}, None, exception)

    # -- LM calls --------------------------------------------------------------------------------

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        model = getattr(instance, "model", None)
        attributes: dict[str, Any] = {KIND: _LLM}
        if isinstance(model, str):
            attributes[SpanAttributes.LLM_MODEL_NAME] = model
            if "/" in model:
                attributes[SpanAttributes.LLM_PROVIDER] = model.split("/", 1)[0]
        name = f"LM.{model}" if isinstance(model, str) else "LM"
        self._start(call_id, name, attributes, lambda: _lm_inputs(instance, inputs), _secrets_of(instance))

    def on_lm_attempt(self, call_id: str | None, instance: Any, attempt: LMAttempt) -> None:
        opened = self._open.get(call_id) if call_id is not None else None
        if opened is None:
            return
        with self._lock:
            self._attempts[call_id or ""] = self._attempts.get(call_id or "", 0) + 1
        if not opened.sampled and attempt.outcome == "ok":
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
        opened.span.add_event("lm.attempt", event)

    def on_lm_request(self, call_id: str | None, instance: Any, request: LMRequest) -> None:
        opened = self._open.get(call_id) if call_id is not None else None
        if opened is None:
            return
        with self._lock:
            attempts = self._attempts.pop(call_id or "", 0)
        if not opened.sampled and request.outcome != "error":
            return  # lean: an unsampled trace keeps the usage of failed calls only
        opened.span.set_attributes(
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
        with self._lock:
            self._attempts.pop(call_id, None)
        self._end(call_id, {}, lambda: _lm_outputs(outputs), exception)

    # -- adapters, tools, interpreters -------------------------------------------------------------

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        name = f"{type(instance).__name__}.format"
        self._start(call_id, name, {KIND: _CHAIN}, lambda: _input(inputs))

    def on_adapter_format_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end(call_id, {}, lambda: _output(outputs), exception)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        name = f"{type(instance).__name__}.parse"
        self._start(call_id, name, {KIND: _CHAIN}, lambda: _input(inputs))

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end(call_id, {}, lambda: _output(outputs), exception)

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        name = getattr(instance, "name", None) or type(instance).__name__
        attributes: dict[str, Any] = {KIND: _TOOL, SpanAttributes.TOOL_NAME: str(name)}
        description = getattr(instance, "desc", None)
        if isinstance(description, str) and description:
            attributes[SpanAttributes.TOOL_DESCRIPTION] = description
        self._start(call_id, f"Tool.{name}", attributes, lambda: _tool_inputs(instance, inputs))

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        self._end(call_id, {}, lambda: _output(outputs), exception)

    def on_interpreter_execute_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        attributes: dict[str, Any] = {KIND: _TOOL, SpanAttributes.TOOL_NAME: "code_interpreter"}
        self._start(call_id, f"{type(instance).__name__}.execute", attributes, lambda: _code(inputs))

    def on_interpreter_execute_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end(call_id, {}, lambda: _output(outputs), exception)

    # -- spans -----------------------------------------------------------------------------------

    def _start(
        self,
        call_id: str,
        name: str,
        attributes: dict[str, Any],
        inputs: Contents | None = None,
        secrets: tuple[str, ...] = (),
        *,
        example: bool = False,
    ) -> Span:
        parent_context: otel_context.Context | None = None
        links: list[Link] = []
        if example:
            parent = trace.get_current_span().get_span_context()
            if parent.is_valid and parent.span_id in self._evaluations:
                # an example of an evaluation: a trace of its own, sampled and kept on its own
                parent_context, links = otel_context.Context(), [Link(parent)]
        inherited = _SECRETS.get()
        secrets_token = None
        if secrets:
            secrets = (*inherited, *secrets)
            secrets_token = _SECRETS.set(secrets)
        else:
            secrets = inherited
        span = self._start_span(name, context=parent_context, attributes=attributes, links=links)
        sampled = span.get_span_context().trace_flags.sampled
        if sampled and inputs is not None:
            span.set_attributes(_scrubbed(inputs(), secrets))
        token = otel_context.attach(trace.set_span_in_context(span))
        kept_inputs = None if sampled else inputs
        self._open[call_id] = _Open(span, token, secrets, secrets_token, sampled, kept_inputs)
        return span

    def _end(
        self,
        call_id: str,
        attributes: dict[str, Any],
        outputs: Contents | None,
        exception: BaseException | None,
    ) -> None:
        opened = self._open.pop(call_id, None)
        if opened is None:
            return
        span, secrets = opened.span, opened.secrets
        if opened.sampled and outputs is not None and exception is None:
            attributes = {**attributes, **outputs()}
        elif exception is not None and opened.inputs is not None:
            attributes = {**attributes, **opened.inputs()}  # a failure is kept: say what it was given
        if attributes:
            span.set_attributes(_scrubbed(attributes, secrets))
        if exception is not None:
            _record_failure(span, exception, secrets)
        span.end()
        otel_context.detach(opened.token)  # type: ignore[arg-type]  # attach's token, opaque
        if opened.secrets_token is not None:
            _SECRETS.reset(opened.secrets_token)

    def __repr__(self) -> str:
        return "TracingCallback()"


def _scrubbed(attributes: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    if not secrets:
        return attributes
    return {k: scrub(v, secrets) if isinstance(v, str) else v for k, v in attributes.items()}


def _lm_inputs(lm: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    messages = inputs.get("messages") or ()
    attributes = message_attributes(INPUT_MESSAGES, messages)
    attributes[SpanAttributes.INPUT_VALUE] = json_text(list(messages))
    attributes[SpanAttributes.INPUT_MIME_TYPE] = _JSON
    parameters = {key: value for key, value in inputs.items() if key in INVOCATION_PARAMETERS}
    kwargs = getattr(lm, "kwargs", None)
    if isinstance(kwargs, Mapping):
        parameters = {**{k: v for k, v in kwargs.items() if k in INVOCATION_PARAMETERS}, **parameters}
    if parameters:
        attributes[SpanAttributes.LLM_INVOCATION_PARAMETERS] = json_text(parameters)
    return attributes


def _lm_outputs(outputs: Any) -> dict[str, Any]:
    if not isinstance(outputs, list) or not outputs:
        return {}
    texts = [_completion_text(output) for output in outputs]
    attributes: dict[str, Any] = {
        SpanAttributes.OUTPUT_VALUE: texts[0],
        SpanAttributes.OUTPUT_MIME_TYPE: _TEXT,
    }
    assistant = ({"role": "assistant", "content": text} for text in texts)
    attributes.update(message_attributes(OUTPUT_MESSAGES, assistant))
    return attributes


def _tool_inputs(tool: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    attributes = _input(inputs)
    arguments = getattr(tool, "args", None)
    if isinstance(arguments, Mapping):
        attributes[SpanAttributes.TOOL_PARAMETERS] = json_text(arguments)
    return attributes


def _code(inputs: Mapping[str, Any]) -> dict[str, Any]:
    code = inputs.get("code")
    if not isinstance(code, str):
        return {}
    return {SpanAttributes.INPUT_VALUE: code, SpanAttributes.INPUT_MIME_TYPE: _TEXT}


def _record_failure(span: Span, exception: BaseException, secrets: Iterable[str]) -> None:
    if isinstance(exception, asyncio.CancelledError):
        span.set_attribute("dspex.cancelled", True)  # stopped from outside: not the example's failure
        return
    message = scrub(f"{type(exception).__name__}: {exception}", secrets)
    span.set_status(Status(StatusCode.ERROR, message))
    span.add_event(
        "exception", {"exception.type": type(exception).__qualname__, "exception.message": message}
    )


def _module_name(instance: Any) -> str:
    signature = getattr(instance, "signature", None)
    cls = type(instance).__name__
    signature_name = getattr(signature, "__name__", None)
    return f"{cls}({signature_name})" if isinstance(signature_name, str) else cls


def _input(inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {SpanAttributes.INPUT_VALUE: json_text(dict(inputs)), SpanAttributes.INPUT_MIME_TYPE: _JSON}


def _output(outputs: Any) -> dict[str, Any]:
    if outputs is None:
        return {}
    return {SpanAttributes.OUTPUT_VALUE: json_text(outputs), SpanAttributes.OUTPUT_MIME_TYPE: _JSON}


def _completion_text(output: Any) -> str:
    if isinstance(output, Mapping):
        text = output.get("text")
        return text if isinstance(text, str) else json_text(output)
    return output if isinstance(output, str) else json_text(output)


def _secret_inputs(inputs: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(
        value
        for key, value in inputs.items()
        if secret_key(key) and isinstance(value, str) and len(value) >= 4
    )


def _secrets_of(lm: Any) -> tuple[str, ...]:
    """The key an LM sends: given (``api_key``, kept as a SecretStr) or read from ``api_key_env``."""
    found: list[str] = []
    candidates: list[Any] = [getattr(lm, "api_key", None), getattr(lm, "_api_key", None)]
    kwargs = getattr(lm, "kwargs", None)
    if isinstance(kwargs, Mapping):
        candidates.append(kwargs.get("api_key"))
    env = getattr(lm, "api_key_env", None)
    if isinstance(env, str):
        candidates.append(os.environ.get(env))
    for value in candidates:
        secret = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if isinstance(secret, str) and len(secret) >= 4:
            found.append(secret)
    return tuple(found)


def _endpoint(url: str) -> str:
    # an API base with user:password@ in it keeps the host and path only
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url.rpartition("@")[2]
