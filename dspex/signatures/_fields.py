"""Field declarations (``InputField`` / ``OutputField``) and the resolved :class:`FieldSpec`.

As in DSPy, ``InputField()`` / ``OutputField()`` return a pydantic :class:`~pydantic.fields.FieldInfo`
whose ``json_schema_extra`` carries the DSPy keys: ``__dspy_field_type`` (``"input"`` / ``"output"``),
``prefix``, ``desc``, ``format``, ``parser`` and ``constraints`` (the pydantic constraints in words).
Every other argument (``default``, ``description``, ``alias``, ``ge``, ``max_length``...) is pydantic's.
A signature resolves each declaration into a :class:`FieldSpec`: still a pydantic ``FieldInfo`` (so
code written for DSPy reads ``annotation`` and ``json_schema_extra`` as usual), with the field's name
and typed accessors (``role``, ``desc``, ``prefix``, ``constraints``) for dspex's adapters.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import pydantic
from pydantic.fields import FieldInfo

from dspex.errors import SignatureError

__all__ = [
    "CONSTRAINT_WORDS",
    "FIELD_TYPE_KEY",
    "IS_TYPE_UNDEFINED",
    "FieldInfo",
    "FieldRole",
    "FieldSpec",
    "InputField",
    "OutputField",
    "declare",
    "default_prefix",
    "infer_prefix",
]

FieldRole = Literal["input", "output"]

# The json_schema_extra key holding a field's role, and the one DSPy sets on a field whose type was
# not written (its Predict then accepts a missing value for it).
FIELD_TYPE_KEY = "__dspy_field_type"
IS_TYPE_UNDEFINED = "IS_TYPE_UNDEFINED"
_DSPY_ARGS = ("desc", "prefix", "format", "parser", FIELD_TYPE_KEY, IS_TYPE_UNDEFINED)

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


def _field(role: FieldRole, kwargs: dict[str, Any]) -> Any:
    for arg in ("format", "parser"):
        if arg in kwargs:  # DSPy keeps them for old programs and warns the same way
            message = f"The {arg!r} argument in InputField/OutputField is deprecated and has no effect."
            warnings.warn(message, DeprecationWarning, stacklevel=3)
    for arg in ("desc", "prefix"):
        if kwargs.get(arg) is not None and not isinstance(kwargs[arg], str):
            raise SignatureError(f"{arg} must be a string, got {type(kwargs[arg]).__name__}")
    extra: dict[str, Any] = {key: kwargs.pop(key) for key in _DSPY_ARGS if key in kwargs}
    for arg in ("desc", "prefix"):
        if arg in extra and extra[arg] is None:
            del extra[arg]  # None means "the default", filled in when the field gets its name
    if "description" in kwargs and "desc" not in extra:
        extra["desc"] = kwargs["description"]
    words = [f"{CONSTRAINT_WORDS[key]}{value}" for key, value in kwargs.items() if key in CONSTRAINT_WORDS]
    if words:
        extra["constraints"] = ", ".join(words)
    given = kwargs.pop("json_schema_extra", None) or {}
    if not isinstance(given, Mapping):
        raise SignatureError("json_schema_extra must be a dict in a signature field")
    extra = {**given, **extra, FIELD_TYPE_KEY: role}
    try:
        return pydantic.Field(json_schema_extra=extra, **kwargs)
    except TypeError as exc:
        raise SignatureError(f"bad field argument: {exc}") from exc


def InputField(**kwargs: Any) -> Any:
    """Declare an input field: ``question: str = InputField(desc="...")``.

    DSPy's arguments ``desc`` (the description shown to the LM), ``prefix`` (default: derived from the
    name, ``"Question:"``), ``format`` / ``parser`` (deprecated, kept) go into ``json_schema_extra``;
    the rest are pydantic's ``Field`` arguments (``default``, ``description``, ``gt, ge, lt, le,
    min_length, max_length, multiple_of, allow_inf_nan``...). Constraints are stated in the prompt.
    """
    return _field("input", kwargs)


def OutputField(**kwargs: Any) -> Any:
    """Declare an output field: ``answer: int = OutputField(desc="a number", ge=0)``.

    Takes the same arguments as :func:`InputField`. Output values are validated against the type and
    the constraints when the LM's answer is parsed; a value that does not validate is an
    :class:`~dspex.errors.AdapterParseError`.
    """
    return _field("output", kwargs)


def declare(
    role: FieldRole,
    desc: str | None = None,
    prefix: str | None = None,
    constraints: Mapping[str, Any] | None = None,
    **extra: Any,
) -> FieldInfo:
    """``InputField(...)`` or ``OutputField(...)`` by role: a declaration built from stored values."""
    kwargs: dict[str, Any] = {**dict(constraints or {}), **extra}
    if desc:
        kwargs["desc"] = desc
    if prefix is not None:
        kwargs["prefix"] = prefix
    declared: FieldInfo = _field(role, kwargs)
    return declared


def _constraints_of(metadata: list[Any]) -> dict[str, Any]:
    """The pydantic constraints among a FieldInfo's metadata, as ``{"ge": 0, "max_length": 5}``."""
    found: dict[str, Any] = {}
    for item in metadata:
        if dataclasses.is_dataclass(item):
            values = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
        else:
            values = dict(getattr(item, "__dict__", {}))
        found.update({key: value for key, value in values.items() if key in CONSTRAINT_WORDS})
    return found


# pydantic marks FieldInfo @final for type checkers only; it supports subclasses at run time
# (FieldInfo._copy handles them), and being one is what lets DSPy code read our fields.
class FieldSpec(FieldInfo):  # type: ignore[misc]
    """A resolved signature field: a pydantic ``FieldInfo`` with its ``name`` and typed accessors.

    ``json_schema_extra`` holds DSPy's keys, always with ``prefix`` and ``desc`` (``"${name}"`` when
    no description was given). ``FieldSpec(name, role, annotation, desc, prefix, constraints)``
    builds one directly; signatures build theirs with :meth:`build` from ``InputField()`` /
    ``OutputField()`` declarations.
    """

    # No __slots__ here: FieldInfo's repr and copy read FieldInfo's slots, and `name` lives in __dict__.
    name: str

    def __init__(
        self,
        name: str,
        role: FieldRole,
        annotation: Any = str,
        desc: str = "",
        prefix: str | None = None,
        constraints: Mapping[str, Any] | None = None,
    ) -> None:
        declared = declare(role, desc, prefix, constraints)
        built = FieldSpec.build(name, declared, annotation)
        _copy_slots(built, self)
        self.name = name

    @classmethod
    def build(cls, name: str, info: FieldInfo, annotation: Any) -> FieldSpec:
        """Resolve the declaration ``info`` for the field called ``name``, filling DSPy's defaults."""
        check_field_name(name)
        extra = dict(_extra_of(name, info))
        if extra.get(FIELD_TYPE_KEY) not in ("input", "output"):
            raise SignatureError(
                f"field {name!r} must be declared with InputField or OutputField "
                f"(its json_schema_extra is {info.json_schema_extra!r})"
            )
        extra.setdefault("prefix", infer_prefix(name) + ":")
        extra.setdefault("desc", f"${{{name}}}")
        spec = cls.__new__(cls)
        _copy_slots(info, spec)
        spec.annotation = annotation
        spec.json_schema_extra = extra
        spec._attributes_set = {**spec._attributes_set, "annotation": annotation, "json_schema_extra": extra}
        spec.name = name
        return spec

    @property
    def extra(self) -> dict[str, Any]:
        """``json_schema_extra`` as a dict (always one on a FieldSpec)."""
        return self.json_schema_extra if isinstance(self.json_schema_extra, dict) else {}

    @property
    def role(self) -> FieldRole:
        """``"input"`` or ``"output"``."""
        role: FieldRole = self.extra[FIELD_TYPE_KEY]
        return role

    @property
    def desc(self) -> str:
        """The description shown to the LM; ``""`` when none was given (DSPy's ``"${name}"``)."""
        desc = str(self.extra.get("desc", ""))
        return "" if desc == f"${{{self.name}}}" else desc

    @property
    def prefix(self) -> str:
        """The field's prefix, ``"Question:"`` by default."""
        return str(self.extra.get("prefix", ""))

    @property
    def constraints(self) -> dict[str, Any]:
        """The pydantic constraints, e.g. ``{"ge": 0}``: validated on parse, stated in the prompt."""
        return _constraints_of(self.metadata)

    def info(self) -> FieldInfo:
        """This field as a declaration, to add it to another signature."""
        return self

    def constraint_text(self) -> str:
        """The constraints as the prompt states them, e.g. ``"greater than: 0, less than: 10"``."""
        text = self.extra.get("constraints")
        if isinstance(text, str):
            return text
        return ", ".join(f"{CONSTRAINT_WORDS[key]}{value}" for key, value in self.constraints.items())

    def _key(self) -> tuple[Any, ...]:
        return (self.name, self.annotation, self.extra, self.metadata, self.default)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSpec):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.name, self.role))


def _extra_of(name: str, info: Any) -> Mapping[str, Any]:
    if not isinstance(info, FieldInfo):
        raise SignatureError(f"field {name!r} needs InputField(...) or OutputField(...), got {info!r}")
    extra = info.json_schema_extra
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise SignatureError(f"field {name!r}: json_schema_extra must be a dict, got {extra!r}")
    return extra


def _copy_slots(source: FieldInfo, target: FieldInfo) -> None:
    for slot in FieldInfo.__slots__:
        if hasattr(source, slot):
            setattr(target, slot, getattr(source, slot))
    # The collections are copied so the new field never shares state with its declaration.
    target.metadata = list(source.metadata)
    target._attributes_set = dict(source._attributes_set)
    target._qualifiers = set(source._qualifiers)


# Names a field cannot take: Signature's own attributes (a field would hide them) and "completed",
# the ChatAdapter's end marker (a field by that name would end the answer early).
RESERVED_NAMES = frozenset(
    {
        "instructions", "input_fields", "output_fields", "fields", "signature_string",
        "with_instructions", "append", "prepend", "insert", "delete", "with_updated_field",
        "with_updated_fields", "append_instructions", "equals", "dump_state", "load_state",
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


def infer_prefix(name: str) -> str:
    """DSPy's words for a field name: split at ``_``, case changes and digits, title-cased, no colon.

    ``"question"`` -> ``"Question"``, ``"camelCaseText"`` -> ``"Camel Case Text"``,
    ``"HTMLParser"`` -> ``"HTML Parser"``, ``"text2number"`` -> ``"Text 2 Number"``.
    """
    # A break before a capital that starts a lowercase run, and between a lowercase/digit and a capital.
    spaced = re.sub(r"(?<=.)(?=[A-Z][a-z])", "_", name)
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", spaced)
    spaced = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", "_", spaced)
    words = [word if word.isupper() else word.capitalize() for word in spaced.split("_")]
    return " ".join(words)


def default_prefix(name: str) -> str:
    """The prefix a field gets by default: :func:`infer_prefix` and a colon (``"Question:"``)."""
    return infer_prefix(name) + ":"
