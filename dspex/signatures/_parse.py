"""The signature string parser: ``"question, context: list[str] -> answer: int"``.

Grammar (whitespace anywhere between tokens)::

    signature := fields? "->" fields
    fields    := field ("," field)*
    field     := NAME (":" TYPE)?          # TYPE: see dspex.signatures._types; default str

Every error names the character position and what was expected there.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from dspex.errors import SignatureError
from dspex.signatures._fields import FieldRole, check_field_name
from dspex.signatures._types import TypeSyntaxError, UnknownTypeError, parse_type_at

__all__ = ["ParsedField", "parse_signature_string"]


@dataclass(frozen=True)
class ParsedField:
    """One field of a signature string: its name, role, type and where it started."""

    name: str
    role: FieldRole
    annotation: Any
    pos: int
    typed: bool = True


class _SignatureParser:
    def __init__(
        self,
        text: str,
        custom_types: Mapping[str, Any] | None,
        allow_modules: Collection[str] | None,
        lookup: Callable[[str], Any] | None,
    ) -> None:
        self.text = text
        self.pos = 0
        self.custom_types = custom_types
        self.allow_modules = allow_modules
        self.lookup = lookup

    def fail(self, message: str, pos: int | None = None, detail: str = "") -> SignatureError:
        where = self.pos if pos is None else pos
        tail = f": {detail}" if detail else ""
        return SignatureError(f"{message} at position {where}{tail} (in signature {self.text!r})")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_arrow(self) -> bool:
        self.skip_ws()
        return self.text.startswith("->", self.pos)

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def parse(self) -> list[ParsedField]:
        inputs = [] if self.at_arrow() else self.fields("input")
        if not self.at_arrow():
            raise self.fail("expected '->' separating inputs from outputs")
        self.pos += 2
        if self.at_end():
            raise self.fail("output field name expected")
        outputs = self.fields("output")
        if not self.at_end():
            what = "a second '->' (a signature has exactly one)" if self.at_arrow() else "end of signature"
            raise self.fail(f"unexpected {self.text[self.pos]!r}: expected ',' or {what}")
        return self.check_duplicates([*inputs, *outputs])

    def fields(self, role: FieldRole) -> list[ParsedField]:
        found = [self.field(role)]
        while not self.at_end() and self.text[self.pos] == ",":
            self.pos += 1
            found.append(self.field(role))
        return found

    def field(self, role: FieldRole) -> ParsedField:
        self.skip_ws()
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.pos += 1
        name = self.text[start : self.pos]
        if not name or not name.isidentifier():
            raise self.fail("field name expected", start)
        try:
            check_field_name(name)
        except SignatureError as exc:
            raise self.fail(f"bad field name {name!r}", start, str(exc)) from exc
        typed = not self.at_end() and self.text[self.pos] == ":"
        annotation = self.annotation(name) if typed else str
        self.expect_separator(name, role)
        return ParsedField(name, role, annotation, start, typed)

    def expect_separator(self, name: str, role: FieldRole) -> None:
        if self.at_end() or self.text[self.pos] == "," or (role == "input" and self.at_arrow()):
            return
        if role == "output" and self.at_arrow():
            raise self.fail("unexpected second '->' (a signature has exactly one)")
        raise self.fail(f"expected ',' or '->' after field {name!r}, found {self.text[self.pos]!r}")

    def annotation(self, name: str) -> Any:
        self.pos += 1  # ":"
        self.skip_ws()
        start = self.pos
        try:
            annotation, self.pos = parse_type_at(
                self.text,
                start,
                custom_types=self.custom_types,
                allow_modules=self.allow_modules,
                lookup=self.lookup,
            )
        except UnknownTypeError as exc:
            type_text = self.type_text(start)
            raise self.fail(f"unknown type {type_text!r} for field {name!r}", exc.pos, exc.expected) from exc
        except TypeSyntaxError as exc:
            detail = f"expected {exc.expected}"
            raise self.fail(f"malformed type for field {name!r}", exc.pos, detail) from exc
        return annotation

    def type_text(self, start: int) -> str:
        """The source text of the type starting at ``start``: up to a top-level ',' or '->'."""
        depth, pos = 0, start
        while pos < len(self.text):
            char = self.text[pos]
            if depth == 0 and (char == "," or self.text.startswith("->", pos)):
                break
            depth += {"[": 1, "]": -1}.get(char, 0)
            pos += 1
        return self.text[start:pos].strip()

    def check_duplicates(self, fields: list[ParsedField]) -> list[ParsedField]:
        seen: dict[str, ParsedField] = {}
        for parsed in fields:
            if parsed.name in seen:
                first = seen[parsed.name]
                if first.role != parsed.role:
                    found = f"but found duplicates: {parsed.name!r}"
                    raise self.fail(f"Input and output fields must have distinct names, {found}", parsed.pos)
                where = f"already an {first.role} field at position {first.pos}"
                raise self.fail(f"duplicate field name {parsed.name!r} ({where})", parsed.pos)
            seen[parsed.name] = parsed
        return fields


def parse_signature_string(
    text: str,
    *,
    custom_types: Mapping[str, Any] | None = None,
    allow_modules: Collection[str] | None = None,
    lookup: Callable[[str], Any] | None = None,
) -> list[ParsedField]:
    """Parse ``"inputs -> outputs"`` into fields, inputs first; SignatureError names the position.

    ``lookup(name)`` resolves type names nothing else knows (KeyError when it does not know either).
    """
    if not isinstance(text, str):
        raise SignatureError(f"a signature string is needed, got {type(text).__name__}")
    return _SignatureParser(text, custom_types, allow_modules, lookup).parse()
