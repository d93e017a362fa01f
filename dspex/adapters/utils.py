"""DSPy's ``dspy.adapters.utils``: how field values and types are written into prompts and read back.

    from dspex.adapters.utils import parse_value, format_field_value, get_annotation_name
    parse_value("[1, 2]", list[int])                      # [1, 2]
    get_annotation_name(dict[str, int | None])            # 'dict[str, Union[int, NoneType]]'

These are the functions the adapters themselves use, so a custom adapter written against them
produces the same text as the built-in ones (and as DSPy 3.4.1's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic.fields import FieldInfo

from dspex.adapters._render import (
    annotation_name,
    field_descriptions,
    format_value,
    placeholder,
    to_jsonable,
)
from dspex.adapters._values import annotation_allows_none, find_enum_member, parse_value
from dspex.signatures import FieldSpec

if TYPE_CHECKING:
    from dspex.signatures import Signature

__all__ = [
    "annotation_allows_none",
    "apply_output_field_defaults",
    "find_enum_member",
    "format_field_value",
    "get_annotation_name",
    "get_field_description_string",
    "parse_value",
    "serialize_for_json",
    "translate_field_type",
]

_FIELD_TYPE_KEY = "__dspy_field_type"


def serialize_for_json(value: Any) -> Any:
    """``value`` as JSON-ready data (via pydantic); what cannot be serialized becomes its ``str``."""
    return to_jsonable(value)


def format_field_value(field_info: FieldInfo, value: Any, assume_text: bool = True) -> str | dict[str, str]:
    """A field's value as the prompt shows it: a list for a ``str`` field as a numbered «list», lists,
    dicts and models as JSON, anything else as ``str``. ``assume_text=False`` wraps it as a text part."""
    text = format_value(field_info.annotation, value)
    return text if assume_text else {"type": "text", "text": text}


def get_annotation_name(annotation: Any) -> str:
    """A type as prompts name it: ``list[str]``, ``Union[int, NoneType]``, ``Literal['a', 'b']``."""
    return annotation_name(annotation)


def translate_field_type(field_name: str, field_info: FieldInfo) -> str:
    """The ``{name}`` placeholder of the structure section, with the type note outputs carry."""
    return placeholder(field_name, field_info.annotation, is_output=_role(field_info) == "output")


def get_field_description_string(fields: Mapping[str, FieldInfo]) -> str:
    """The numbered field list of the system message: ``1. `question` (str): the question``."""
    specs = {name: _as_spec(name, info) for name, info in fields.items()}
    return field_descriptions(specs)


def apply_output_field_defaults(signature: type[Signature], fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` in signature order, with each missing optional output filled in: its default (or
    default factory), else None when its type allows None. Missing required outputs stay missing."""
    completed: dict[str, Any] = {}
    for name, info in signature.output_fields.items():
        if name in fields:
            completed[name] = fields[name]
        elif not info.is_required():
            completed[name] = info.get_default(call_default_factory=True)
        elif annotation_allows_none(info.annotation):
            completed[name] = None
    return completed


def _role(info: FieldInfo) -> str | None:
    extra = info.json_schema_extra
    return extra.get(_FIELD_TYPE_KEY) if isinstance(extra, dict) else None  # type: ignore[return-value]


def _as_spec(name: str, info: FieldInfo) -> FieldSpec:
    if isinstance(info, FieldSpec):
        return info
    return FieldSpec.build(name, info, info.annotation)
