"""Typed parsing of output values: LM text (or JSON data) into the field's type, validated by pydantic.

The rules are DSPy 3.4.1's ``parse_value``: ``str`` takes the value as text; enums match a member's
value, then its name; a ``Literal`` also accepts ``'a'``, ``"a"`` and ``Literal[a]``; a text-or-None
union takes the text as written. Other text is read as JSON (repaired by ``json_repair`` when it is
almost JSON), else as a Python literal (``ast.literal_eval``: data only, never code), else kept as
text; pydantic then validates the candidate.
"""

from __future__ import annotations

import ast
import enum
import functools
import json
import types
import typing
from typing import Annotated, Any, Literal, Union

import json_repair
from pydantic import Field, PydanticUserError, TypeAdapter, ValidationError

from dspex.adapters.types._prompt import is_custom_type
from dspex.errors import SignatureError
from dspex.signatures import FieldSpec

__all__ = [
    "FieldValueError",
    "annotation_allows_none",
    "find_enum_member",
    "load_text",
    "parse_field_value",
    "parse_value",
    "validator_for",
]

# ast.literal_eval on megabytes of nested brackets is slow; LM values that large are not literals.
_MAX_LITERAL_CHARS = 100_000


class FieldValueError(ValueError):
    """A value that does not validate against its field's type or constraints."""


def annotation_allows_none(annotation: Any) -> bool:
    """Whether ``annotation`` admits None (``X | None``, ``Optional[X]``, ``None``, ``Annotated`` of one)."""
    if annotation is None or annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return bool(args) and annotation_allows_none(args[0])
    if origin in (Union, types.UnionType):
        return any(annotation_allows_none(arg) for arg in args)
    return False


def validator_for(spec: FieldSpec) -> TypeAdapter[Any]:
    """The pydantic validator of a field: its type plus its constraints (``gt``, ``max_length`` ...)."""
    return _validator_of(spec.annotation, tuple(spec.constraints.items()))


def _validator_of(annotation: Any, constraints: tuple[tuple[str, Any], ...] = ()) -> TypeAdapter[Any]:
    try:
        return _validator(annotation, constraints)
    except TypeError:  # an unhashable annotation: build without the cache
        return _validator.__wrapped__(annotation, constraints)


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
    """Data from text: JSON (repaired if need be), else a Python literal, else the text itself."""
    try:
        return json.loads(text)  # the common case, and much faster than json_repair
    except ValueError:
        pass
    candidate = json_repair.loads(text)
    if candidate != "" or text == "":  # json_repair answers "" when it found nothing to repair
        return candidate
    if len(text) <= _MAX_LITERAL_CHARS:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return text


def find_enum_member(kind: type[enum.Enum], identifier: Any) -> enum.Enum:
    """The member of ``kind`` whose value is ``identifier``, else the one so named; ValueError if none.

    Values are tried first: in an explicitly-valued enum a value may equal another member's name.
    """
    for member in kind:
        if member.value == identifier:
            return member
    if isinstance(identifier, str) and identifier in kind.__members__:
        return kind[identifier]
    raise ValueError(f"{identifier} is not a valid name or value for the enum {kind.__name__}")


def parse_value(value: Any, annotation: Any) -> Any:
    """``value`` (LM text or JSON data) as ``annotation``; a ``ValueError`` (pydantic's
    ``ValidationError`` is one) when it does not fit."""
    if annotation is str:
        return str(value)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return find_enum_member(annotation, value)
    if typing.get_origin(annotation) is Literal:
        allowed = typing.get_args(annotation)
        if value in allowed:
            return value
        if isinstance(value, str):
            value = _literal_text(value)
            if value in allowed:
                return value
            # not a member yet: "2" may still validate as 2 for Literal[1, 2]
    validator = _validator_of(annotation)
    if not isinstance(value, str) or _is_text_or_none(annotation):
        return validator.validate_python(value)
    try:
        return validator.validate_python(load_text(value))
    except ValidationError:
        if not is_custom_type(annotation):
            raise
    # A special type (Code, Reasoning...) may read the raw text itself, e.g. a fenced code block.
    return validator.validate_python(value)


def parse_field_value(spec: FieldSpec, value: Any) -> Any:
    """``value`` as the field's type, then checked against its constraints; FieldValueError says why not."""
    try:
        parsed = parse_value(value, spec.annotation)
        if spec.constraints:
            parsed = validator_for(spec).validate_python(parsed)
    except ValidationError as exc:
        raise FieldValueError(_short_errors(exc)) from exc
    except ValueError as exc:
        raise FieldValueError(str(exc)) from exc
    return parsed


def _is_text_or_none(annotation: Any) -> bool:
    # `str | None`, `Optional[str]`, `Union[int, str, None]`: the text is taken as written, as DSPy does.
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) in (Union, types.UnionType) and str in args and type(None) in args


def _literal_text(value: str) -> str:
    """The choice named by 'a', "a", Literal[a] or str[a]."""
    text = value.strip()
    if text.startswith(("Literal[", "str[")) and text.endswith("]"):
        text = text[text.find("[") + 1 : -1]
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return text


def _short_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(loc) for loc in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)
