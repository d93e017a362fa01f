"""Type expressions as text: a small, safe parser and its inverse.

Signature strings and saved programs name field types as text (``list[str]``, ``int | None``,
``Literal["a", "b"]``, ``myapp.models:Answer``). This module turns such text into Python types
without ``eval``: a recursive-descent parser over a fixed vocabulary, plus explicit ``custom_types``
and ``"pkg.module:Name"`` import paths for user classes (pydantic models, enums).
"""

from __future__ import annotations

import builtins
import enum
import importlib
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from dspex.errors import SecurityPolicyError, SignatureError

__all__ = ["TypeSyntaxError", "UnknownTypeError", "parse_type_at", "string_to_type", "type_to_string"]

_NONE_TYPE = type(None)
_MISSING: Any = object()

# Plain (unsubscripted) names a type string may use; typing's capitalised aliases map to builtins.
_SIMPLE: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool, "bytes": bytes, "Any": Any,
    "None": _NONE_TYPE, "NoneType": _NONE_TYPE,
    "list": list, "dict": dict, "tuple": tuple, "set": set, "frozenset": frozenset,
    "List": list, "Dict": dict, "Tuple": tuple, "Set": set, "FrozenSet": frozenset,
    "complex": complex, "bytearray": bytearray,
}  # fmt: skip
_SPECIAL = {"Optional", "Union", "Literal"}
_ARITY = {list: 1, set: 1, frozenset: 1, dict: 2}
_LITERAL_WORDS: dict[str, Any] = {"True": True, "False": False}
KNOWN_NAMES = sorted({*_SIMPLE, *_SPECIAL} - {"NoneType"})


class TypeSyntaxError(Exception):
    """A type expression that does not parse; ``pos`` is the offending character index."""

    def __init__(self, expected: str, pos: int) -> None:
        super().__init__(expected)
        self.expected = expected
        self.pos = pos


class UnknownTypeError(TypeSyntaxError):
    """A well-formed type expression that names a type we cannot resolve."""

    def __init__(self, name: str, pos: int, reason: str) -> None:
        super().__init__(reason, pos)
        self.name = name


@dataclass(frozen=True)
class _Value:
    """A literal value inside ``Literal[...]`` (a string, number, bool or None)."""

    value: Any


class _TypeParser:
    """Recursive descent over ``text`` from ``pos``; see :func:`parse_type_at`."""

    def __init__(
        self,
        text: str,
        pos: int,
        custom_types: Mapping[str, Any] | None,
        allow_modules: Collection[str] | None,
        lookup: Callable[[str], Any] | None = None,
    ) -> None:
        self.text = text
        self.pos = pos
        self.custom_types = dict(custom_types or {})
        self.allow_modules = allow_modules
        self.lookup = lookup

    # -- characters -------------------------------------------------------------------------
    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            raise TypeSyntaxError(what, self.pos)
        self.pos += 1

    def word(self, extra: str = "") -> str:
        start = self.pos
        allowed = "_" + extra
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] in allowed):
            self.pos += 1
        return self.text[start : self.pos]

    # -- grammar ----------------------------------------------------------------------------
    def union(self) -> Any:
        first, pos = self.primary()
        if self.peek() != "|":
            return first
        members = [self.as_type(first, pos)]
        while self.peek() == "|":
            self.pos += 1
            members.append(self.as_type(*self.primary()))
        return Union[tuple(members)]  # noqa: UP007 - built at runtime from a tuple

    def primary(self) -> tuple[Any, int]:
        char = self.peek()
        start = self.pos
        if char in ("'", '"'):
            return _Value(self.string_literal()), start
        if char.isdigit() or (char == "-" and self.text[self.pos + 1 : self.pos + 2].isdigit()):
            return _Value(self.int_literal()), start
        if self.text.startswith("...", self.pos):
            self.pos += 3
            return _Value(Ellipsis), start
        if char == "(":  # a parenthesised union: str | (int | float)
            self.pos += 1
            inner, inner_start = self.union_at()
            self.expect(")", "')' closing the parenthesis")
            return self.as_type(inner, inner_start), start
        if not (char.isalpha() or char == "_"):
            raise TypeSyntaxError("a type name", self.pos)
        return self.named(start), start

    def named(self, start: int) -> Any:
        name = self.word(extra=".")
        if self.text[self.pos : self.pos + 1] == ":" and self._ident_follows(self.pos + 1):
            self.pos += 1
            return self.imported(name, self.word(extra=".<>"), start)
        if name in _LITERAL_WORDS:
            return _Value(_LITERAL_WORDS[name])
        base = self.resolve(name, start)
        if self.peek() != "[":
            return base
        return self.subscript(name, base, start)

    def _ident_follows(self, pos: int) -> bool:
        return pos < len(self.text) and (self.text[pos].isalpha() or self.text[pos] == "_")

    def subscript(self, name: str, base: Any, start: int) -> Any:
        self.pos += 1  # "["
        args: list[tuple[Any, int]] = [self.union_at()]
        while self.peek() == ",":
            self.pos += 1
            args.append(self.union_at())
        self.expect("]", "',' or ']' closing the type arguments")
        return self.build(name, base, args, start)

    def union_at(self) -> tuple[Any, int]:
        self.skip_ws()
        start = self.pos
        return self.union(), start

    # -- building ---------------------------------------------------------------------------
    def as_type(self, value: Any, pos: int) -> Any:
        if isinstance(value, _Value):
            if value.value is None:
                return _NONE_TYPE
            raise TypeSyntaxError("a type, not a literal value (values belong in Literal[...])", pos)
        return value

    def build(self, name: str, base: Any, args: list[tuple[Any, int]], start: int) -> Any:
        if base is Literal:
            return Literal[tuple(self.literal_value(v, p) for v, p in args)]
        targs = tuple(Ellipsis if v == _Value(Ellipsis) else self.as_type(v, p) for v, p in args)
        if base is typing.Optional:
            if len(targs) != 1:
                raise TypeSyntaxError("Optional[...] with exactly one type", start)
            return typing.Optional[targs[0]]  # noqa: UP045 - built at runtime
        if base is Union:
            return Union[targs]  # noqa: UP007 - built at runtime
        return self.generic(name, base, targs, args, start)

    def generic(self, name: str, base: Any, targs: tuple[Any, ...], args: list[Any], start: int) -> Any:
        if base not in (*_ARITY, tuple):
            raise TypeSyntaxError(f"no type arguments: {name!r} is not generic", start)
        wanted = _ARITY.get(base)
        if wanted is not None and len(targs) != wanted:
            raise TypeSyntaxError(f"{name}[...] with {wanted} type argument(s), got {len(targs)}", start)
        if Ellipsis in targs and (base is not tuple or len(targs) != 2 or targs[1] is not Ellipsis):
            raise TypeSyntaxError("'...' only as tuple[X, ...]", args[-1][1])
        return base[targs if len(targs) > 1 else targs[0]]

    def literal_value(self, value: Any, pos: int) -> Any:
        if isinstance(value, _Value) and value.value is not Ellipsis:
            return value.value
        if value is _NONE_TYPE:
            return None
        raise TypeSyntaxError("a literal value (a quoted string, an integer, True, False or None)", pos)

    def resolve(self, name: str, start: int) -> Any:
        if name in self.custom_types:
            return self.custom_types[name]
        if name in _SIMPLE:
            return _SIMPLE[name]
        if name in _SPECIAL:
            return {"Optional": typing.Optional, "Union": Union, "Literal": Literal}[name]
        found = self.resolve_in_scope(name)
        if found is not _MISSING:
            return found
        reason = f"{name!r} is not a known type name (known: {', '.join(KNOWN_NAMES)})"
        raise UnknownTypeError(name, start, reason + "; pass custom_types={...} or write 'pkg.module:Name'")

    def resolve_in_scope(self, name: str) -> Any:
        """``name`` (or ``Outer.Inner``) from custom_types or the caller's scope, if it names a type."""
        head, *attributes = name.split(".")
        obj = self.custom_types.get(head, _MISSING)
        if obj is _MISSING and self.lookup is not None:
            try:
                obj = self.lookup(head)
            except KeyError:
                return _MISSING
        for attribute in attributes:
            obj = getattr(obj, attribute, _MISSING)
        return obj if _is_type_form(obj) else _MISSING

    def imported(self, module: str, qualname: str, start: int) -> Any:
        path = f"{module}:{qualname}"
        for key in (path, qualname, qualname.rpartition(".")[2]):
            if key in self.custom_types:
                return self.custom_types[key]
        return _import_class(module, qualname, start, self.allow_modules)

    # -- literals ---------------------------------------------------------------------------
    def string_literal(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text) and self.text[self.pos] != quote:
            if self.text[self.pos] == "\\" and self.pos + 1 < len(self.text):
                self.pos += 1
            chars.append(self.text[self.pos])
            self.pos += 1
        if self.pos >= len(self.text):
            raise TypeSyntaxError(f"closing {quote} for the string opened", start)
        self.pos += 1
        return "".join(chars)

    def int_literal(self) -> int:
        start = self.pos
        if self.text[self.pos] == "-":
            self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos].isdigit():
            self.pos += 1
        return int(self.text[start : self.pos])


def _import_class(module: str, qualname: str, pos: int, allow_modules: Collection[str] | None) -> Any:
    path = f"{module}:{qualname}"
    if allow_modules is not None and not _module_allowed(module, allow_modules):
        allowed = ", ".join(allow_modules)
        raise SecurityPolicyError(f"type {path!r} is outside the allowed modules ({allowed})")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise UnknownTypeError(path, pos, f"cannot import {path!r}: {exc}") from exc
    if not isinstance(obj, type):
        raise UnknownTypeError(path, pos, f"{path!r} is not a class")
    return obj


def _module_allowed(module: str, allow_modules: Collection[str]) -> bool:
    # dspex's own types (History, Tool, ToolCalls...) are always allowed, as serialization.import_object does
    trusted = (*allow_modules, "dspex")
    return any(module == allowed or module.startswith(allowed + ".") for allowed in trusted)


def _is_type_form(obj: Any) -> bool:
    """True for what may annotate a field: a class, a generic alias, a union, a typing special form."""
    if obj is _MISSING or obj is None:
        return False
    return (
        isinstance(obj, type | types.UnionType | types.GenericAlias)
        or typing.get_origin(obj) is not None
        or type(obj).__module__ == "typing"
    )


def parse_type_at(
    text: str,
    pos: int,
    *,
    custom_types: Mapping[str, Any] | None = None,
    allow_modules: Collection[str] | None = None,
    lookup: Callable[[str], Any] | None = None,
) -> tuple[Any, int]:
    """Parse one type expression of ``text`` starting at ``pos``; return (type, end position).

    Names nothing else knows are passed to ``lookup`` (KeyError: unknown), e.g. the caller's scope.
    Raises :class:`TypeSyntaxError` (or its :class:`UnknownTypeError`) with an absolute position.
    """
    parser = _TypeParser(text, pos, custom_types, allow_modules, lookup)
    parser.skip_ws()
    start = parser.pos
    value = parser.union()
    return parser.as_type(value, start), parser.pos


def string_to_type(
    text: str,
    custom_types: Mapping[str, Any] | None = None,
    *,
    allow_modules: Collection[str] | None = None,
) -> Any:
    """The type a type string names, e.g. ``string_to_type("list[str]") == list[str]``.

    Safe: no ``eval``. Knows builtins (str, int, float, bool, bytes, list, dict, tuple, set,
    frozenset), ``Any``, ``Optional``, ``Union``, ``X | Y``, ``Literal[...]`` and ``None``; names in
    ``custom_types``; and classes by import path, ``"pkg.module:Name"`` (only inside
    ``allow_modules`` when given, else :class:`~dspex.errors.SecurityPolicyError`).
    A malformed or unknown type raises :class:`~dspex.errors.SignatureError` naming the position.
    """
    try:
        result, end = parse_type_at(text, 0, custom_types=custom_types, allow_modules=allow_modules)
        end = len(text) - len(text[end:].lstrip())
        if end != len(text):
            raise TypeSyntaxError("end of the type", end)
    except UnknownTypeError as exc:
        raise SignatureError(f"unknown type {text!r} at position {exc.pos}: {exc.expected}") from exc
    except TypeSyntaxError as exc:
        message = f"malformed type {text!r} at position {exc.pos}: expected {exc.expected}"
        raise SignatureError(message) from exc
    return result


def type_to_string(annotation: Any) -> str:
    """The text :func:`string_to_type` reads back as ``annotation``.

    Unions print as ``X | Y``; user classes print as their import path ``"pkg.module:Qual.Name"``.
    A type we cannot write (e.g. ``Callable[...]``) raises :class:`~dspex.errors.SignatureError`.
    """
    if annotation is None or annotation is _NONE_TYPE:
        return "None"
    if annotation is Any:
        return "Any"
    origin = typing.get_origin(annotation)
    if origin is None:
        return _plain_type_to_string(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " | ".join(type_to_string(arg) for arg in args)
    if origin is Literal:
        return f"Literal[{', '.join(_literal_to_string(arg) for arg in args)}]"
    if origin in (*_ARITY, tuple) and args:
        return f"{origin.__name__}[{', '.join(_arg_to_string(arg) for arg in args)}]"
    if origin in (*_ARITY, tuple):
        return str(origin.__name__)
    supported = "builtins, Literal, unions and classes"
    raise SignatureError(f"cannot write type {annotation!r} as a string (supported: {supported})")


def _plain_type_to_string(annotation: Any) -> str:
    if not isinstance(annotation, type):
        raise SignatureError(f"{annotation!r} is not a type")
    kind: type = annotation
    if kind.__module__ == "builtins" and getattr(builtins, kind.__name__, None) is kind:
        if kind.__name__ in _SIMPLE:
            return str(kind.__name__)
        raise SignatureError(f"type {kind.__name__!r} is not supported in signatures")
    return f"{kind.__module__}:{kind.__qualname__}"


def _arg_to_string(arg: Any) -> str:
    return "..." if arg is Ellipsis else type_to_string(arg)


def _literal_to_string(value: Any) -> str:
    if isinstance(value, enum.Enum) or not isinstance(value, str | int | bool | type(None)):
        raise SignatureError(f"Literal value {value!r} cannot be written as a string")
    return repr(value)
