"""What each kind of call's span is named and holds: the callback's
:class:`~dspex.observability.tracing.lean.Source` for module, LM, adapter, tool and code calls.

Every function here runs only for spans that are exported: at once for a sampled span, at the end
(or at the export) for an unsampled one that failed. An unsampled span that does not fail never
calls any of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Final

from openinference.semconv.trace import (
    OpenInferenceMimeTypeValues,
    OpenInferenceSpanKindValues,
    SpanAttributes,
)

from dspex.observability.tracing.attributes import (
    INPUT_MESSAGES,
    INVOCATION_PARAMETERS,
    OUTPUT_MESSAGES,
    json_text,
    message_attributes,
    secret_key,
)

__all__ = [
    "CODE",
    "FORMAT",
    "KIND",
    "LM",
    "MODULE",
    "PARSE",
    "TOOL_CALL",
    "lm_outputs",
    "output",
]

KIND: Final = SpanAttributes.OPENINFERENCE_SPAN_KIND
_CHAIN: Final = OpenInferenceSpanKindValues.CHAIN.value
_LLM: Final = OpenInferenceSpanKindValues.LLM.value
_TOOL: Final = OpenInferenceSpanKindValues.TOOL.value
_JSON: Final = OpenInferenceMimeTypeValues.JSON.value
_TEXT: Final = OpenInferenceMimeTypeValues.TEXT.value


class _Source:
    """A :class:`~dspex.observability.tracing.lean.Source` from three functions."""

    __slots__ = ("_attributes", "_contents", "_name", "_secrets")

    def __init__(
        self,
        name: Callable[[Any], str],
        attributes: Callable[[Any], dict[str, Any]],
        contents: Callable[[Any, Mapping[str, Any]], dict[str, Any]],
        secrets: Callable[[Any, Mapping[str, Any]], tuple[str, ...]] | None = None,
    ) -> None:
        self._name, self._attributes, self._contents, self._secrets = name, attributes, contents, secrets

    def name(self, instance: Any) -> str:
        return self._name(instance)

    def attributes(self, instance: Any) -> dict[str, Any]:
        return self._attributes(instance)

    def contents(self, instance: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self._contents(instance, inputs)

    def secrets(self, instance: Any, inputs: Mapping[str, Any]) -> tuple[str, ...]:
        return self._secrets(instance, inputs) if self._secrets is not None else ()


def _module_attributes(instance: Any) -> dict[str, Any]:
    return {KIND: _CHAIN, "dspex.module": type(instance).__qualname__}


def _lm_name(lm: Any) -> str:
    model = getattr(lm, "model", None)
    return f"LM.{model}" if isinstance(model, str) else "LM"


def _lm_attributes(lm: Any) -> dict[str, Any]:
    model = getattr(lm, "model", None)
    attributes: dict[str, Any] = {KIND: _LLM}
    if isinstance(model, str):
        attributes[SpanAttributes.LLM_MODEL_NAME] = model
        if "/" in model:
            attributes[SpanAttributes.LLM_PROVIDER] = model.split("/", 1)[0]
    return attributes


def _tool_name(tool: Any) -> str:
    return f"Tool.{getattr(tool, 'name', None) or type(tool).__name__}"


def _tool_attributes(tool: Any) -> dict[str, Any]:
    name = getattr(tool, "name", None) or type(tool).__name__
    attributes: dict[str, Any] = {KIND: _TOOL, SpanAttributes.TOOL_NAME: str(name)}
    description = getattr(tool, "desc", None)
    if isinstance(description, str) and description:
        attributes[SpanAttributes.TOOL_DESCRIPTION] = description
    return attributes


def _chain(instance: Any) -> dict[str, Any]:
    return {KIND: _CHAIN}


def _code_attributes(instance: Any) -> dict[str, Any]:
    return {KIND: _TOOL, SpanAttributes.TOOL_NAME: "code_interpreter"}


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


def lm_outputs(outputs: Any) -> dict[str, Any]:
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
    attributes = _input(tool, inputs)
    arguments = getattr(tool, "args", None)
    if isinstance(arguments, Mapping):
        attributes[SpanAttributes.TOOL_PARAMETERS] = json_text(arguments)
    return attributes


def _code(interpreter: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    code = inputs.get("code")
    if not isinstance(code, str):
        return {}
    return {SpanAttributes.INPUT_VALUE: code, SpanAttributes.INPUT_MIME_TYPE: _TEXT}


def _module_name(instance: Any) -> str:
    signature = getattr(instance, "signature", None)
    cls = type(instance).__name__
    signature_name = getattr(signature, "__name__", None)
    return f"{cls}({signature_name})" if isinstance(signature_name, str) else cls


def _input(instance: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {SpanAttributes.INPUT_VALUE: json_text(dict(inputs)), SpanAttributes.INPUT_MIME_TYPE: _JSON}


def output(outputs: Any) -> dict[str, Any]:
    if outputs is None:
        return {}
    return {SpanAttributes.OUTPUT_VALUE: json_text(outputs), SpanAttributes.OUTPUT_MIME_TYPE: _JSON}


def _completion_text(output: Any) -> str:
    if isinstance(output, Mapping):
        text = output.get("text")
        return text if isinstance(text, str) else json_text(output)
    return output if isinstance(output, str) else json_text(output)


def _secret_inputs(instance: Any, inputs: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(
        value
        for key, value in inputs.items()
        if secret_key(key) and isinstance(value, str) and len(value) >= 4
    )


def _secrets_of(lm: Any, inputs: Mapping[str, Any]) -> tuple[str, ...]:
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


MODULE: Final = _Source(_module_name, _module_attributes, _input, _secret_inputs)
LM: Final = _Source(_lm_name, _lm_attributes, _lm_inputs, _secrets_of)
FORMAT: Final = _Source(lambda adapter: f"{type(adapter).__name__}.format", _chain, _input)
PARSE: Final = _Source(lambda adapter: f"{type(adapter).__name__}.parse", _chain, _input)
TOOL_CALL: Final = _Source(_tool_name, _tool_attributes, _tool_inputs)
CODE: Final = _Source(lambda interpreter: f"{type(interpreter).__name__}.execute", _code_attributes, _code)
