"""Field declarations (``InputField`` / ``OutputField``) and the resolved :class:`FieldSpec`."""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dspex.errors import SignatureError

__all__ = [
    "CONSTRAINT_WORDS",
    "FieldInfo",
    "FieldRole",
    "FieldSpec",
    "InputField",
    "OutputField",
    "default_prefix",
]

FieldRole = Literal["input", "output"]

# The pydantic constraints a field may carry, with the words the prompt states them in (DSPy's wording,
# so that prompts match). They are validated on parse as well.
CONSTRAINT_WORDS: dict[str, str] = {
    "gt": "greater than: ",
    "ge": "greater than or equal to: ",
    "lt": "less than: ",
    "le": "less than or equal to: ",
    "min_length": "minimum length: ",
    "max_length": "maximum length: ",
    "multiple_of": "a multiple of the given number: ",
    "allow_inf_nan": "allow 'inf', '-inf', 'nan' values: ",
}


@dataclass(frozen=True)
class FieldInfo:
    """What ``InputField()`` / ``OutputField()`` return: a field's role and metadata, no name or type yet."""

    role: FieldRole
    desc: str = ""
    prefix: str | None = None
    constraints: Mapping[str, Any] = field(default_factory=dict)


def _field(role: FieldRole, desc: str, prefix: str | None, constraints: dict[str, Any]) -> Any:
    unknown = sorted(set(constraints) - set(CONSTRAINT_WORDS))
    if unknown:
        accepted = ", ".join(["desc", "prefix", *CONSTRAINT_WORDS])
        raise SignatureError(f"unknown field argument(s) {', '.join(unknown)}; accepted: {accepted}")
    if not isinstance(desc, str) or not (prefix is None or isinstance(prefix, str)):
        raise SignatureError("desc and prefix must be strings")
    return FieldInfo(role=role, desc=desc, prefix=prefix, constraints=dict(constraints))


def InputField(*, desc: str = "", prefix: str | None = None, **constraints: Any) -> Any:
    """Declare an input field of a class-form signature: ``question: str = InputField(desc="...")``.

    ``constraints`` are pydantic's ``gt, ge, lt, le, min_length, max_length, multiple_of,
    allow_inf_nan``; they are stated in the prompt. ``prefix`` is kept for DSPy compatibility (the
    chat format does not show it); by default it is derived from the name (``"Question:"``).
    """
    return _field("input", desc, prefix, constraints)


def OutputField(*, desc: str = "", prefix: str | None = None, **constraints: Any) -> Any:
    """Declare an output field: ``answer: int = OutputField(desc="a number", ge=0)``.

    Output values are validated against the type and the ``constraints`` when the LM's answer is
    parsed; a value that does not validate is an :class:`~dspex.errors.AdapterParseError`.
    """
    return _field("output", desc, prefix, constraints)


@dataclass(frozen=True)
class FieldSpec:
    """A resolved signature field: name, role, type and the text that describes it to the LM."""

    name: str
    role: FieldRole
    annotation: Any
    desc: str
    prefix: str
    constraints: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, info: FieldInfo, annotation: Any) -> FieldSpec:
        """Resolve ``info`` for the field called ``name``, filling DSPy's defaults."""
        check_field_name(name)
        # DSPy writes "${name}" for "no description"; we store it as the empty string it renders as.
        desc = "" if info.desc == f"${{{name}}}" else info.desc
        prefix = default_prefix(name) if info.prefix is None else info.prefix
        return cls(name, info.role, annotation, desc, prefix, dict(info.constraints))

    def info(self) -> FieldInfo:
        """This field's declaration, to add it to another signature."""
        return FieldInfo(self.role, self.desc, self.prefix, dict(self.constraints))

    def constraint_text(self) -> str:
        """The constraints as the prompt states them, e.g. ``"greater than: 0, less than: 10"``."""
        return ", ".join(f"{CONSTRAINT_WORDS[key]}{value}" for key, value in self.constraints.items())


# Names a field cannot take: Signature's own attributes (a field would hide them) and "completed",
# the ChatAdapter's end marker (a field by that name would end the answer early).
RESERVED_NAMES = frozenset(
    {
        "instructions", "input_fields", "output_fields", "fields", "signature_string",
        "with_instructions", "append", "prepend", "insert", "delete", "with_updated_field",
        "dump", "from_dump", "mro", "completed",
    }
)  # fmt: skip


def check_field_name(name: str) -> None:
    """Raise SignatureError unless ``name`` can name a field."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise SignatureError(f"field name {name!r} is not a Python identifier")
    if name.startswith("_"):
        raise SignatureError(f"field name {name!r} starts with '_' (reserved for private attributes)")
    if name in RESERVED_NAMES:
        reserved = ", ".join(sorted(RESERVED_NAMES))
        raise SignatureError(f"field name {name!r} is reserved (reserved: {reserved})")


def default_prefix(name: str) -> str:
    """DSPy's default prefix for a field name: words split at ``_``, case changes and digits, title-cased.

    ``"question"`` -> ``"Question:"``, ``"camelCaseText"`` -> ``"Camel Case Text:"``,
    ``"HTMLParser"`` -> ``"HTML Parser:"``, ``"text2number"`` -> ``"Text 2 Number:"``.
    """
    # A break before a capital that starts a lowercase run, and between a lowercase/digit and a capital.
    spaced = re.sub(r"(?<=.)(?=[A-Z][a-z])", "_", name)
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", spaced)
    spaced = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", "_", spaced)
    words = [word if word.isupper() else word.capitalize() for word in spaced.split("_")]
    return " ".join(words) + ":"
