"""JSONAdapter: inputs as ``[[ ## name ## ]]`` sections, the answer as one JSON object (DSPy 3.4.1's).

It asks the provider for JSON with ``response_format``: the output fields' strict JSON schema
(OpenAI structured outputs) when the LM supports response schemas and every output type allows
one, else ``{"type": "json_object"}``. The answer is read with ``json_repair`` (as DSPy does), so
text or a Markdown fence around the object, or a missing brace, do not make it fail.
"""

from __future__ import annotations

import json
import logging
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

import json_repair
import pydantic

from dspex.adapters._render import STRUCTURE_INTRO, python_type_hint, to_jsonable
from dspex.adapters.base import Adapter, SignatureLike
from dspex.adapters.chat import ChatAdapter, FieldInfoWithName, _placeholders
from dspex.signatures import Signature, ensure_signature

__all__ = ["JSONAdapter", "extract_json_object"]

logger = logging.getLogger(__name__)

_JSON_MODE = {"type": "json_object"}


class JSONAdapter(ChatAdapter):
    """Answers as a JSON object.

    ``structured_outputs`` (a dspex addition) forces the strict-schema ``response_format`` on or
    off; by default it is used when the LM says it supports response schemas, as in DSPy.
    """

    name: ClassVar[str] = "json"
    fallback_factory: ClassVar[Any] = None  # a JSON answer that fails to parse has nothing to fall back to

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = True,
        parallel_tool_calls: bool | None = None,
        *,
        structured_outputs: bool | None = None,
    ) -> None:
        super().__init__(
            callbacks,
            use_native_function_calling=use_native_function_calling,
            parallel_tool_calls=parallel_tool_calls,
        )
        self.structured_outputs = structured_outputs

    # -- the request ------------------------------------------------------------------------
    def request_options(self, signature: SignatureLike, lm: Any = None) -> dict[str, Any]:
        """``response_format``: the output schema with structured outputs, else JSON mode.

        On DSPy-style calls (``lm`` given) only an LM whose ``supported_params`` include
        ``response_format`` gets one, as in DSPy (where a BaseLM declares none by default); the
        hot path (:meth:`acall_result`, no ``lm``) always asks for JSON.
        """
        if lm is not None and "response_format" not in _supported_params(lm):
            return {}
        sig = ensure_signature(signature)
        structured = self.structured_outputs
        if structured is None:
            structured = bool(getattr(lm, "supports_response_schema", False)) if lm is not None else False
        if not structured or _has_open_mapping(sig):
            return {"response_format": dict(_JSON_MODE)}
        try:
            return {"response_format": _json_schema_format(sig)}
        except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticInvalidForJsonSchema):
            logger.warning("Failed to build a structured-output schema for %s; using JSON mode", sig.__name__)
            return {"response_format": dict(_JSON_MODE)}

    # -- formatting -------------------------------------------------------------------------
    def format_field_structure(self, signature: type[Signature]) -> str:
        parts = [
            STRUCTURE_INTRO,
            "Inputs will have the following structure:",
            self.format_field_with_value(_placeholders(signature.input_fields), role="user"),
            "Outputs will be a JSON object with the following fields.",
            self.format_field_with_value(_placeholders(signature.output_fields), role="assistant"),
        ]
        return "\n\n".join(parts).strip()

    def user_message_output_requirements(self, signature: type[Signature]) -> str:
        specs = signature.output_fields.values()
        fields = ", then ".join(f"`{spec.name}`{python_type_hint(spec.annotation)}" for spec in specs)
        return f"Respond with a JSON object in the following order of fields: {fields}."

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: Mapping[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        values = {
            FieldInfoWithName(name, spec): outputs.get(name, missing_field_message)
            for name, spec in signature.output_fields.items()
        }
        return self.format_field_with_value(values, role="assistant")

    def format_field_with_value(
        self, fields_with_values: Mapping[FieldInfoWithName, Any], role: str = "user"
    ) -> str:
        """User turns: ``[[ ## name ## ]]`` sections; assistant turns: one indented JSON object."""
        if role == "user":
            return super().format_field_with_value(fields_with_values)
        values = {field.name: to_jsonable(value) for field, value in fields_with_values.items()}
        return json.dumps(values, indent=2, ensure_ascii=False)

    def format_finetune_data(
        self,
        signature: type[Signature],
        demos: Any,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
    ) -> dict[str, list[Any]]:
        """Not available for JSON answers (as in DSPy)."""
        raise NotImplementedError("JSONAdapter does not format fine-tuning data")

    # -- parsing ----------------------------------------------------------------------------
    def parse(self, signature: SignatureLike, completion: str) -> dict[str, Any]:
        """The output fields of the JSON object in ``completion``; other keys are ignored."""
        sig = ensure_signature(signature)
        data = extract_json_object(completion)
        if data is None:
            raise self.parse_error(sig, completion, "LM response cannot be serialized to a JSON object.")
        found = {name: value for name, value in data.items() if name in sig.output_fields}
        return self.typed_outputs(sig, found, completion)

    def __repr__(self) -> str:
        return f"JSONAdapter(structured_outputs={self.structured_outputs})"


def _supported_params(lm: Any) -> Any:
    try:
        return lm.supported_params or ()
    except AttributeError:  # an LM that declares nothing supports nothing optional (DSPy's default)
        return ()


def _fallback_for(chat: ChatAdapter) -> Adapter:
    return JSONAdapter(
        use_native_function_calling=chat.use_native_function_calling,
        parallel_tool_calls=chat.parallel_tool_calls,
    )


# ChatAdapter (and its subclasses but this one) retry a failed parse with a JSONAdapter. chat.py
# cannot import this module (it imports chat.py), so the fallback is registered from here.
ChatAdapter.fallback_factory = _fallback_for


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object ``text`` holds (repaired by ``json_repair``), or the first ``{...}`` in it."""
    data = _load(text)
    if not isinstance(data, dict):
        span = _first_object_span(text)
        if span is not None:
            data = _load(text[span[0] : span[1]])
    return data if isinstance(data, dict) else None


def _load(text: str) -> Any:
    try:
        return json.loads(text)  # the common case, much faster than json_repair
    except ValueError:
        return json_repair.loads(text)


def _first_object_span(text: str) -> tuple[int, int] | None:
    """Start and end of the first balanced ``{...}`` (braces inside strings do not count)."""
    start = text.find("{")
    if start < 0:
        return None
    depth, quote, escaped = 0, "", False
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char == '"':
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return start, index + 1
    return None


def _has_open_mapping(signature: type[Signature]) -> bool:
    # Structured outputs need every property declared; dict[str, X] cannot be.
    return any(
        typing.get_origin(spec.annotation) is dict or spec.annotation is dict
        for spec in signature.output_fields.values()
    )


def _json_schema_format(signature: type[Signature]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        name: (spec.annotation, spec.default if not spec.is_required() else ...)
        for name, spec in signature.output_fields.items()
    }
    model = pydantic.create_model("Outputs", __config__=pydantic.ConfigDict(extra="forbid"), **fields)
    schema = _strict(model.model_json_schema())
    return {"type": "json_schema", "json_schema": {"name": "outputs", "strict": True, "schema": schema}}


def _strict(schema: Any) -> Any:
    """Every object lists all its properties as required and forbids others (OpenAI strict mode)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _strict(value) for key, value in schema.items()}
    if result.get("type") == "object":
        result.setdefault("properties", {})
        result["required"] = list(result["properties"])
        result["additionalProperties"] = False
    return result
