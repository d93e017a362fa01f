"""How types and values are written into prompts, in DSPy 3.4.1's exact wording.

These strings are part of the wire format: a prompt optimized with DSPy means the same thing here
only if every character matches, which the parity tests check.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from pydantic import PydanticUserError, TypeAdapter
from pydantic_core import PydanticSerializationError

from dspex.adapters.types._prompt import custom_type_descriptions, is_reasoning, skips_type_note
from dspex.adapters.types.tool import TOOL_CALLS_HINT, ToolCalls
from dspex.signatures import FieldSpec

__all__ = [
    "COMPLETED_MARKER",
    "STRUCTURE_INTRO",
    "annotation_name",
    "field_descriptions",
    "format_value",
    "json_schema_text",
    "placeholder",
    "python_type_hint",
    "to_jsonable",
    "type_note",
]

_INDENT = " " * 8
STRUCTURE_INTRO = (
    "All interactions will be structured in the following way, with the appropriate values filled in."
)
COMPLETED_MARKER = "[[ ## completed ## ]]"


def annotation_name(annotation: Any) -> str:
    """A type as the prompt names it: ``list[str]``, ``Union[int, NoneType]``, ``Literal['a', 'b']``."""
    origin = typing.get_origin(annotation)
    if origin is types.UnionType:
        origin = Union  # X | Y reads like typing.Union, as on Python 3.14
    if origin is None:
        if is_reasoning(annotation):  # DSPy names it str: it replaced ChainOfThought's text field
            return "str"
        return str(getattr(annotation, "__name__", annotation))
    args = typing.get_args(annotation)
    if origin is Literal:
        return f"Literal[{', '.join(_literal_arg(arg) for arg in args)}]"
    return f"{annotation_name(origin)}[{', '.join(annotation_name(arg) for arg in args)}]"


def _literal_arg(value: Any) -> str:
    if not isinstance(value, str):
        return annotation_name(value)
    if "'" in value and '"' not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "\\'") + "'" if "'" in value else f"'{value}'"


def python_type_hint(annotation: Any) -> str:
    """The type reminder after an output field in the last user message; none for ``str``."""
    if annotation is ToolCalls:
        return TOOL_CALLS_HINT
    return (
        "" if annotation is str else f" (must be formatted as a valid Python {annotation_name(annotation)})"
    )


def field_descriptions(fields: Mapping[str, FieldSpec]) -> str:
    """The numbered list of fields in the system message: ``1. `question` (str): the question``."""
    lines = []
    for number, spec in enumerate(fields.values(), start=1):
        line = f"{number}. `{spec.name}` ({annotation_name(spec.annotation)}): {spec.desc}"
        for kind, description in custom_type_descriptions(spec.annotation):
            line += f"\n    Type description of {annotation_name(kind)}: {description}"
        if spec.constraints:
            line += f"\nConstraints: {spec.constraint_text()}"
        lines.append(line)
    return "\n".join(lines).strip()


def type_note(spec: FieldSpec) -> str:
    """The placeholder of a field in the structure section, with a note on the type of an output."""
    return placeholder(spec.name, spec.annotation, is_output=spec.role == "output")


def placeholder(name: str, annotation: Any, *, is_output: bool) -> str:
    """``{name}``, and for an output whose type is not ``str`` a note on the values it allows."""
    note = _type_requirement(annotation) if is_output else ""
    return f"{{{name}}}{_INDENT}# note: the value you produce {note}" if note else f"{{{name}}}"


def _type_requirement(annotation: Any) -> str:
    if annotation is str or skips_type_note(annotation):
        return ""
    if annotation is bool:
        return "must be True or False"
    if annotation in (int, float):
        return f"must be a single {annotation.__name__} value"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return f"must be one of: {'; '.join(str(member.value) for member in annotation)}"
    if typing.get_origin(annotation) is Literal:
        choices = "; ".join(str(arg) for arg in typing.get_args(annotation))
        return f"must exactly match (no extra characters) one of: {choices}"
    return f"must adhere to the JSON schema: {json_schema_text(annotation)}"


@functools.lru_cache(maxsize=512)
def json_schema_text(annotation: Any) -> str:
    """The type's JSON schema as one line, keys sorted with ``type`` first (easier for LMs to follow)."""
    schema = TypeAdapter(annotation).json_schema()
    return json.dumps(_type_first(schema), ensure_ascii=False)


def _type_first(value: Any) -> Any:
    if isinstance(value, Mapping):
        ordered = sorted(value.items(), key=lambda item: (item[0] != "type", item[0]))
        return {key: _type_first(item) for key, item in ordered}
    if isinstance(value, list):
        return [_type_first(item) for item in value]
    return value


def format_value(annotation: Any, value: Any) -> str:
    """A field value as it appears in a message.

    A list given to a ``str`` field becomes a numbered list of «quoted» items; lists, dicts and
    models become JSON; everything else its ``str`` (strings are never quoted or escaped).
    """
    if type(value) is str:
        return value
    if isinstance(value, list) and annotation is str:
        return _numbered_list(value)
    plain = to_jsonable(value)
    if isinstance(plain, dict | list):
        return json.dumps(plain, ensure_ascii=False)
    return str(plain)


def to_jsonable(value: Any) -> Any:
    """``value`` as JSON data via pydantic; what pydantic cannot serialize becomes its ``str``."""
    # Fast path for the common plain values (exact types: enums and other subclasses go to pydantic).
    if value is None or type(value) in (str, bool, int) or (type(value) is float and math.isfinite(value)):
        return value
    kind: Any = type(value)
    try:
        return _adapter_for(kind).dump_python(value, mode="json", fallback=str)
    except (PydanticUserError, PydanticSerializationError, TypeError, ValueError):
        return str(value)


@functools.lru_cache(maxsize=256)
def _adapter_for(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def _numbered_list(items: list[Any]) -> str:
    if not items:
        return "N/A"
    if len(items) == 1:
        return _quoted_blob(items[0])
    return "\n".join(f"[{number}] {_quoted_blob(item)}" for number, item in enumerate(items, start=1))


def _quoted_blob(item: Any) -> str:
    text = str(item)
    if "\n" not in text and "«" not in text and "»" not in text:
        return f"«{text}»"
    return "«««\n    " + text.replace("\n", "\n    ") + "\n»»»"
