"""Bytes <-> messages, with no Kafka in sight: what every producer and consumer calls.

``encode`` writes compact UTF-8 JSON in field order. ``decode`` validates against a model or a
discriminated union (``JobMessage``, ``StatusMessage``) under the reading rules of
:mod:`dspex.schemas.base` and turns every failure into a :class:`~dspex.errors.SchemaError`
that names the model, the field and what was wrong; ``schema_error_reason`` gives the dead-letter
reason code for such an error.
"""

from __future__ import annotations

import typing
from typing import Any, TypeVar, overload

from pydantic import BaseModel, TypeAdapter, ValidationError

from dspex.errors import SchemaError
from dspex.schemas.base import WIRE_CONTEXT
from dspex.schemas.dlq import (
    DLQ_REASON_SCHEMA_INVALID,
    DLQ_REASON_UNDECODABLE,
    DLQ_REASON_UNSUPPORTED_VERSION,
)
from dspex.schemas.registry import UNION_TYPES

__all__ = ["decode", "encode", "model_name", "schema_error_reason"]

M = TypeVar("M", bound=BaseModel)

_MAX_ERRORS_SHOWN = 5
_MAX_INPUT_SHOWN = 60
_UNDECODABLE_TYPES = frozenset({"json_invalid"})
_VERSION_TYPE = "unsupported_schema_version"
_VERSION_TYPES = frozenset({_VERSION_TYPE, "missing_schema_version"})
_adapters: dict[int, tuple[Any, TypeAdapter[Any]]] = {}


def encode(model: BaseModel) -> bytes:
    """The message as compact UTF-8 JSON."""
    return model.model_dump_json().encode("utf-8")


@overload
def decode(data: bytes | bytearray | memoryview | str | None, model_type: type[M]) -> M: ...
@overload
def decode(data: bytes | bytearray | memoryview | str | None, model_type: Any) -> Any: ...
def decode(data: bytes | bytearray | memoryview | str | None, model_type: Any) -> Any:
    """Validate ``data`` (JSON bytes) as ``model_type`` (a model class or a union of them).

    Raises SchemaError for a missing value, invalid JSON, wrong or missing fields and unknown
    major schema versions; fields the model does not know are ignored.
    """
    name = model_name(model_type)
    if data is None:
        raise SchemaError(f"{name}: no value (a tombstone or an empty message)", model=name)
    payload = bytes(data) if isinstance(data, bytearray | memoryview) else data
    try:
        if isinstance(model_type, type) and issubclass(model_type, BaseModel):
            return model_type.model_validate_json(payload, context=WIRE_CONTEXT)
        return _adapter(model_type).validate_json(payload, context=WIRE_CONTEXT)
    except ValidationError as exc:
        raise SchemaError(_summary(name, exc), model=name) from exc


def model_name(model_type: Any) -> str:
    """``"Task"`` for a model, ``"JobMessage"`` for a union of ours, else ``"A | B"``."""
    if isinstance(model_type, type):
        return model_type.__name__
    for name, union in UNION_TYPES.items():
        if union is model_type:
            return name
    args = typing.get_args(model_type)
    if args and typing.get_origin(model_type) is typing.Annotated:
        return model_name(args[0])
    if args:
        return " | ".join(model_name(arg) for arg in args)
    return repr(model_type)


def schema_error_reason(error: SchemaError) -> str:
    """The dead-letter reason code for a SchemaError raised by :func:`decode`."""
    cause = error.__cause__
    if not isinstance(cause, ValidationError):
        return DLQ_REASON_UNDECODABLE
    types = {item["type"] for item in cause.errors(include_url=False)}
    if types & _UNDECODABLE_TYPES:
        return DLQ_REASON_UNDECODABLE
    if _VERSION_TYPE in types:
        return DLQ_REASON_UNSUPPORTED_VERSION
    return DLQ_REASON_SCHEMA_INVALID


def _adapter(model_type: Any) -> TypeAdapter[Any]:
    # Unions are Annotated objects (not reliably hashable); cache by identity, keeping the object
    # alive in the value so its id cannot be reused.
    cached = _adapters.get(id(model_type))
    if cached is None:
        cached = (model_type, TypeAdapter(model_type))
        _adapters[id(model_type)] = cached
    return cached[1]


def _summary(name: str, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    version = [item for item in errors if item["type"] in _VERSION_TYPES]
    if version:
        return version[0]["msg"]
    shown = "; ".join(_describe(item) for item in errors[:_MAX_ERRORS_SHOWN])
    more = len(errors) - _MAX_ERRORS_SHOWN
    suffix = f"; and {more} more" if more > 0 else ""
    return f"{name} is invalid: {shown}{suffix}"


def _describe(item: Any) -> str:
    where = ".".join(str(part) for part in item["loc"]) or "value"
    if item["type"] == "json_invalid":
        return f"not valid UTF-8 JSON ({item['msg']})"
    if item["type"] == "missing":
        return f"{where}: {item['msg']}"
    return f"{where}: {item['msg']} (got {type(item['input']).__name__} {_short(item['input'])})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_INPUT_SHOWN else text[: _MAX_INPUT_SHOWN - 3] + "..."
