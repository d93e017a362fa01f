"""Typed parsing of output values: LM text (or JSON data) into the field's type, validated by pydantic.

Text is read as JSON first, then as a Python literal (``ast.literal_eval``: data only, never code),
then kept as text; pydantic then validates the candidate against the field's type and constraints.
"""

from __future__ import annotations

import ast
import enum
import functools
import json
import re
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import Field, PydanticUserError, TypeAdapter, ValidationError

from dspex.errors import SignatureError
from dspex.signatures import FieldSpec

__all__ = ["FieldValueError", "allows_none", "load_text", "parse_field_value", "validator_for"]

_FENCE = re.compile(r"^```[\w-]*\s*\n(?P<body>.*?)\n?```$", re.DOTALL)
# ast.literal_eval on megabytes of nested brackets is slow; LM values that large are not literals.
_MAX_LITERAL_CHARS = 100_000


class FieldValueError(ValueError):
    """A value that does not validate against its field's type or constraints."""


def allows_none(annotation: Any) -> bool:
    """Whether ``annotation`` admits None (``X | None``, ``Optional[X]``, ``None``, ``Any``)."""
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return any(allows_none(arg) for arg in typing.get_args(annotation))
    return False


def validator_for(spec: FieldSpec) -> TypeAdapter[Any]:
    """The pydantic validator of a field: its type plus its constraints (``gt``, ``max_length`` ...)."""
    items = tuple(spec.constraints.items())
    try:
        return _validator(spec.annotation, items)
    except TypeError:  # an unhashable annotation: build without the cache
        return _validator.__wrapped__(spec.annotation, items)


@functools.lru_cache(maxsize=1024)
def _validator(annotation: Any, constraints: tuple[tuple[str, Any], ...]) -> TypeAdapter[Any]:
    target: Any = Annotated[annotation, Field(**dict(constraints))] if constraints else annotation
    try:
        return TypeAdapter(target)
    except PydanticUserError as exc:
        raise SignatureError(
            f"constraints {dict(constraints)} do not apply to type {annotation!r}: {exc}"
        ) from exc


def load_text(text: str) -> Any:
    """Data from text: JSON, else a Python literal, else the (fence-stripped) text itself."""
    body = strip_fence(text.strip())
    try:
        return json.loads(body)
    except ValueError:
        pass
    if len(body) <= _MAX_LITERAL_CHARS:
        try:
            return ast.literal_eval(body)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return body


def strip_fence(text: str) -> str:
    """The body of a Markdown code block (```json ... ```), or ``text`` unchanged."""
    match = _FENCE.match(text)
    return match.group("body").strip() if match else text


def parse_field_value(spec: FieldSpec, value: Any) -> Any:
    """``value`` (LM text or JSON data) as the field's type; FieldValueError says why not."""
    annotation = spec.annotation
    if annotation is str and not spec.constraints:
        return value if isinstance(value, str) else _as_text(value)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_member(annotation, value)
    if typing.get_origin(annotation) is Literal:
        value = _literal_choice(annotation, value)
        if value in typing.get_args(annotation):
            return value
    if isinstance(value, str) and not _reads_raw_text(annotation):
        value = load_text(value)
    try:
        return validator_for(spec).validate_python(value)
    except ValidationError as exc:
        raise FieldValueError(_short_errors(exc)) from exc


def _as_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)


def _reads_raw_text(annotation: Any) -> bool:
    # A str field (with constraints) or a str-or-None union takes the text as written, as DSPy does.
    if annotation is str:
        return True
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) in (Union, types.UnionType) and str in args and type(None) in args


def _literal_choice(annotation: Any, value: Any) -> Any:
    """The Literal member ``value`` names, also when written as 'a', "a" or Literal['a']."""
    allowed = typing.get_args(annotation)
    if value in allowed or not isinstance(value, str):
        return value
    text = value.strip()
    for wrapper in ("Literal[", "str["):
        if text.startswith(wrapper) and text.endswith("]"):
            text = text[len(wrapper) : -1]
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return text  # not a member yet: "2" may still validate as 2 for Literal[1, 2]


def _enum_member(kind: type[enum.Enum], value: Any) -> enum.Enum:
    candidates = [value, value.strip()] if isinstance(value, str) else [value]
    for candidate in candidates:
        for member in kind:
            if member.value == candidate:
                return member
        if isinstance(candidate, str) and candidate in kind.__members__:
            return kind[candidate]
    choices = ", ".join(str(member.value) for member in kind)
    raise FieldValueError(f"{value!r} is not one of {kind.__name__}'s values ({choices})")


def _short_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(loc) for loc in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)
