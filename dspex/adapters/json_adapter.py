"""JSONAdapter: inputs as ``[[ ## name ## ]]`` sections, the answer as one JSON object.

It asks the provider for JSON with ``response_format`` (``{"type": "json_object"}``, or a strict
``json_schema`` of the output fields with ``structured_outputs=True``), and reads the first JSON
object in the answer, tolerating text or a Markdown fence around it. The prompt follows DSPy's
JSONAdapter closely; byte parity is not promised for it.
"""

from __future__ import annotations

import ast
import json
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

import pydantic

from dspex.adapters._render import STRUCTURE_INTRO, python_type_hint, to_jsonable, type_note
from dspex.adapters._values import strip_fence
from dspex.adapters.base import Adapter, SignatureLike
from dspex.signatures import Signature, ensure_signature

__all__ = ["JSONAdapter", "extract_json_object"]


class JSONAdapter(Adapter):
    """Answers as a JSON object. ``structured_outputs=True`` sends the output fields' JSON schema
    (OpenAI structured outputs) instead of plain JSON mode, when every output type allows one."""

    name: ClassVar[str] = "json"

    def __init__(self, *, structured_outputs: bool = False) -> None:
        self.structured_outputs = structured_outputs

    def field_structure(self, signature: type[Signature]) -> str:
        inputs = "\n\n".join(f"[[ ## {s.name} ## ]]\n{type_note(s)}" for s in signature.input_fields.values())
        outputs = {spec.name: type_note(spec) for spec in signature.output_fields.values()}
        parts = [
            STRUCTURE_INTRO,
            "Inputs will have the following structure:",
            inputs.strip(),
            "Outputs will be a JSON object with the following fields.",
            json.dumps(outputs, indent=2, ensure_ascii=False),
        ]
        return "\n\n".join(parts).strip()

    def output_requirements(self, signature: type[Signature]) -> str:
        specs = signature.output_fields.values()
        fields = ", then ".join(f"`{spec.name}`{python_type_hint(spec.annotation)}" for spec in specs)
        return f"Respond with a JSON object in the following order of fields: {fields}."

    def assistant_content(
        self, signature: type[Signature], outputs: Mapping[str, Any], missing: str | None = None
    ) -> str:
        values = {name: to_jsonable(outputs.get(name, missing)) for name in signature.output_fields}
        return json.dumps(values, indent=2, ensure_ascii=False)

    def request_options(self, signature: SignatureLike) -> dict[str, Any]:
        """``{"response_format": {"type": "json_object"}}``, or the output schema with structured outputs."""
        sig = ensure_signature(signature)
        if self.structured_outputs and not _has_open_mapping(sig):
            return {"response_format": _json_schema_format(sig)}
        return {"response_format": {"type": "json_object"}}

    def parse(self, signature: SignatureLike, text: str) -> dict[str, Any]:
        """The output fields of the first JSON object in ``text``; other keys are ignored."""
        sig = ensure_signature(signature)
        data = extract_json_object(text)
        if data is None:
            raise self.parse_error("the LM output is not a JSON object", text)
        found = {name: value for name, value in data.items() if name in sig.output_fields}
        return self.typed_outputs(sig, found, text)

    def __repr__(self) -> str:
        return f"JSONAdapter(structured_outputs={self.structured_outputs})"


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object ``text`` holds: all of it, inside a code fence, or the first ``{...}`` in it.

    Python-style dicts (single quotes, True/None) are read with ``ast.literal_eval`` (data only).
    """
    body = strip_fence(text.strip())
    candidates = [body]
    span = _first_object_span(body)
    if span is not None:
        candidates.append(body[span[0] : span[1]])
    for candidate in candidates:
        data = _load_object(candidate)
        if data is not None:
            return data
    return None


def _load_object(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return data if isinstance(data, dict) else None


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
            continue
        if char in "\"'":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return start, index + 1
    end = text.rfind("}")
    return (start, end + 1) if end > start else None


def _has_open_mapping(signature: type[Signature]) -> bool:
    # Structured outputs need every property declared; dict[str, X] cannot be.
    return any(
        typing.get_origin(spec.annotation) is dict or spec.annotation is dict
        for spec in signature.output_fields.values()
    )


def _json_schema_format(signature: type[Signature]) -> dict[str, Any]:
    fields: dict[str, Any] = {name: (spec.annotation, ...) for name, spec in signature.output_fields.items()}
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
