"""Signatures: the typed inputs and outputs of an LM call, and the instructions for it.

Two ways to write one::

    class QA(Signature):
        \"\"\"Answer the question with a number.\"\"\"
        question: str = InputField()
        answer: int = OutputField(desc="a number")

    QA2 = make_signature("question -> answer: int", "Answer the question with a number.")

A signature is a class and never changes: the helpers (``with_instructions``, ``append``, ``delete``
...) return new classes. Two signatures are equal when their :meth:`Signature.dump` is equal.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from dspex.errors import SignatureError
from dspex.ids import canonical_json
from dspex.signatures._fields import FieldInfo, FieldRole, FieldSpec, InputField, OutputField
from dspex.signatures._parse import parse_signature_string
from dspex.signatures._types import string_to_type, type_to_string

__all__ = ["Signature", "default_instructions", "ensure_signature", "make_signature"]

# The namespace key that hands already-resolved fields to a class built by make_signature/helpers.
_SPECS_KEY = "_dspex_field_specs"
_DEFAULT_NAME = "StringSignature"


def default_instructions(inputs: Collection[str], outputs: Collection[str]) -> str:
    """DSPy's instructions for a signature without any: "Given the fields `a`, produce the fields `b`."."""
    given = ", ".join(f"`{name}`" for name in inputs)
    produce = ", ".join(f"`{name}`" for name in outputs)
    return f"Given the fields {given}, produce the fields {produce}."


class _SignatureMeta(type):
    """Equality, hashing and repr for signature classes, and ``Signature("a -> b")`` as DSPy spells it."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Signature:
            return make_signature(*args, **kwargs)
        raise SignatureError(f"{cls.__name__} is a signature class: pass the class, don't instantiate it")

    def __eq__(cls, other: object) -> bool:
        if cls is other:
            return True
        if not isinstance(other, _SignatureMeta):
            return NotImplemented
        return bool(cls._dump_text() == other._dump_text())

    def __hash__(cls) -> int:
        return hash(cls._dump_text())

    def __repr__(cls) -> str:
        fields = ", ".join(f"{spec.name}: {type_to_string(spec.annotation)}" for spec in cls.fields.values())
        text = f"{cls.signature_string!r}, fields=[{fields}], instructions={cls.instructions!r}"
        return f"{cls.__name__}({text})"

    # Declared for type checkers; set on every class by Signature.__init_subclass__.
    fields: dict[str, FieldSpec]
    signature_string: str
    instructions: str

    def _dump_text(cls) -> str:
        cached = cls.__dict__.get("_dspex_dump_text")
        if cached is None:
            cached = canonical_json(cls.dump())  # type: ignore[attr-defined]
            cls._dspex_dump_text = cached
        return str(cached)


class Signature(metaclass=_SignatureMeta):
    """Base class of every signature. Subclass it with annotated fields; the docstring is the instructions.

    Class attributes (read-only by convention; the helpers make new classes):
    ``instructions``, ``input_fields`` / ``output_fields`` / ``fields`` (ordered ``name -> FieldSpec``,
    inputs first) and ``signature_string`` (``"question, context -> answer"``).
    """

    instructions: ClassVar[str] = ""
    input_fields: ClassVar[dict[str, FieldSpec]] = {}
    output_fields: ClassVar[dict[str, FieldSpec]] = {}
    fields: ClassVar[dict[str, FieldSpec]] = {}
    signature_string: ClassVar[str] = " -> "

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._dspex_own_doc = cls.__dict__.get("__doc__") is not None  # type: ignore[attr-defined]
        specs = cls.__dict__.get(_SPECS_KEY)
        if specs is None:
            specs = _class_form_specs(cls)
        _install(cls, list(specs), _class_instructions(cls, specs))

    # -- immutable helpers ------------------------------------------------------------------
    @classmethod
    def with_instructions(cls, instructions: str) -> type[Signature]:
        """A new signature with the same fields and these instructions."""
        return _build(cls.__name__, cls.fields.values(), instructions)

    @classmethod
    def insert(cls, index: int, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        """A new signature with ``field`` inserted at ``index`` among the inputs or the outputs (by its role).

        Negative indices count from the end, as in DSPy: ``-1`` appends. ``type_`` (a type or a type
        string) defaults to ``str``.
        """
        spec = _spec_for(cls, name, field, type_)
        section = [s for s in cls.fields.values() if s.role == spec.role]
        position = index + len(section) + 1 if index < 0 else index
        if not 0 <= position <= len(section):
            where = f"the {len(section)} {spec.role} field(s) of {cls.signature_string!r}"
            raise SignatureError(f"index {index} is out of range for {where}")
        section.insert(position, spec)
        others = [s for s in cls.fields.values() if s.role != spec.role]
        ordered = [*section, *others] if spec.role == "input" else [*others, *section]
        return _build(cls.__name__, ordered, cls.instructions)

    @classmethod
    def append(cls, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        """A new signature with ``field`` added last among the inputs or the outputs."""
        return cls.insert(-1, name, field, type_)

    @classmethod
    def prepend(cls, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        """A new signature with ``field`` added first among the inputs or the outputs."""
        return cls.insert(0, name, field, type_)

    @classmethod
    def delete(cls, name: str) -> type[Signature]:
        """A new signature without the field ``name`` (unlike DSPy, an unknown name is an error)."""
        _require_field(cls, name)
        return _build(cls.__name__, [s for s in cls.fields.values() if s.name != name], cls.instructions)

    @classmethod
    def with_updated_field(
        cls,
        name: str,
        *,
        desc: str | None = None,
        prefix: str | None = None,
        type_: Any = None,
        constraints: Mapping[str, Any] | None = None,
    ) -> type[Signature]:
        """A new signature where field ``name`` has the given desc / prefix / type / constraints."""
        old = _require_field(cls, name)
        info = FieldInfo(
            old.role,
            old.desc if desc is None else desc,
            old.prefix if prefix is None else prefix,
            dict(old.constraints if constraints is None else constraints),
        )
        new = _spec_for(cls, name, info, old.annotation if type_ is None else type_, replacing=True)
        specs = [new if s.name == name else s for s in cls.fields.values()]
        return _build(cls.__name__, specs, cls.instructions)

    # -- serialization ----------------------------------------------------------------------
    @classmethod
    def dump(cls) -> dict[str, Any]:
        """The JSON-able form: ``{"instructions": ..., "fields": [{"name", "role", "type", "desc",
        "prefix", "constraints"}, ...]}``, types written by :func:`type_to_string`."""
        fields = [
            {
                "name": spec.name,
                "role": spec.role,
                "type": type_to_string(spec.annotation),
                "desc": spec.desc,
                "prefix": spec.prefix,
                "constraints": dict(spec.constraints),
            }
            for spec in cls.fields.values()
        ]
        return {"instructions": cls.instructions, "fields": fields}

    @classmethod
    def from_dump(
        cls,
        data: Mapping[str, Any],
        *,
        custom_types: Mapping[str, Any] | None = None,
        allow_modules: Collection[str] | None = None,
    ) -> type[Signature]:
        """Rebuild a signature from :meth:`dump` output. Classes named by import path are imported,
        only from ``allow_modules`` when it is given (else :class:`~dspex.errors.SecurityPolicyError`)."""
        try:
            instructions = data["instructions"]
            specs = [_spec_from_dump(item, custom_types, allow_modules) for item in data["fields"]]
        except (KeyError, TypeError) as exc:
            raise SignatureError(f"not a dumped signature (missing or malformed {exc})") from exc
        return _build(_DEFAULT_NAME, specs, instructions)


# -- building classes ------------------------------------------------------------------------


def _install(cls: type[Signature], specs: list[FieldSpec], instructions: str) -> None:
    _check_unique(specs)
    for spec in specs:
        type_to_string(spec.annotation)  # every field type must be writable, so dump() always works
    cls.input_fields = {s.name: s for s in specs if s.role == "input"}
    cls.output_fields = {s.name: s for s in specs if s.role == "output"}
    cls.fields = {**cls.input_fields, **cls.output_fields}
    cls.signature_string = f"{', '.join(cls.input_fields)} -> {', '.join(cls.output_fields)}"
    cls.instructions = instructions


def _build(name: str, specs: Collection[FieldSpec], instructions: str | None) -> type[Signature]:
    if instructions is not None and not isinstance(instructions, str):
        raise SignatureError(f"instructions must be a string, got {type(instructions).__name__}")
    if not instructions:  # None or "": DSPy's default, for the fields the new class has
        instructions = _default_for(specs)
    namespace: dict[str, Any] = {_SPECS_KEY: tuple(specs), "__module__": __name__}
    namespace["__doc__"] = instructions
    return typing.cast("type[Signature]", type(name, (Signature,), namespace))


def _check_unique(specs: list[FieldSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise SignatureError(f"duplicate field name {spec.name!r}")
        seen.add(spec.name)


def _class_instructions(cls: type, specs: Collection[FieldSpec]) -> str:
    doc = cls.__dict__.get("__doc__")
    if doc is not None:
        return inspect.cleandoc(doc)
    bases = [base for base in cls.__bases__ if isinstance(base, _SignatureMeta)]
    inherited = [base for base in bases if base.__dict__.get("_dspex_own_doc")]
    if inherited:
        return str(inherited[0].instructions)
    return _default_for(specs)


def _default_for(specs: Collection[FieldSpec]) -> str:
    inputs = [s.name for s in specs if s.role == "input"]
    return default_instructions(inputs, [s.name for s in specs if s.role == "output"])


def _class_form_specs(cls: type) -> list[FieldSpec]:
    """Fields of a class-form signature: the bases' fields, then this class's annotated fields in order."""
    specs: dict[str, FieldSpec] = {}
    for base in reversed(cls.__mro__[1:]):
        if isinstance(base, _SignatureMeta):
            specs.update(base.fields)
    own = _own_field_infos(cls)
    hints = _type_hints(cls, own)
    for name, info in own.items():
        specs[name] = FieldSpec.build(name, info, hints.get(name, str))
    return list(specs.values())


def _own_field_infos(cls: type) -> dict[str, FieldInfo]:
    annotations = inspect.get_annotations(cls)
    declared = {name: value for name, value in cls.__dict__.items() if isinstance(value, FieldInfo)}
    order = [name for name in annotations if name in declared]
    order += [name for name in declared if name not in annotations]
    for name in annotations:
        if name not in declared and not _is_classvar(annotations[name]):
            raise SignatureError(
                f"field {name!r} of signature {cls.__name__} is neither an input nor an output: "
                f"write `{name}: ... = InputField()` or `= OutputField()`"
            )
    for name in order:  # the values are markers, not attributes: keep them off the class
        delattr(cls, name)
    return {name: declared[name] for name in order}


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar")) or typing.get_origin(annotation) is ClassVar


def _type_hints(cls: type, own: Mapping[str, FieldInfo]) -> dict[str, Any]:
    """Resolve this class's annotations, so ``from __future__ import annotations`` in user code works."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError, AttributeError) as exc:
        raise SignatureError(f"cannot resolve the field types of signature {cls.__name__}: {exc}") from exc
    return {name: hints[name] for name in own if name in hints}


def _spec_for(
    cls: type[Signature], name: str, field: FieldInfo, type_: Any, *, replacing: bool = False
) -> FieldSpec:
    if not isinstance(field, FieldInfo):
        raise SignatureError(f"field {name!r} needs InputField(...) or OutputField(...), got {field!r}")
    if name in cls.fields and not replacing:
        raise SignatureError(f"signature {cls.signature_string!r} already has a field {name!r}")
    annotation = str if type_ is None else string_to_type(type_) if isinstance(type_, str) else type_
    return FieldSpec.build(name, field, annotation)


def _require_field(cls: type[Signature], name: str) -> FieldSpec:
    if name not in cls.fields:
        raise SignatureError(
            f"signature {cls.signature_string!r} has no field {name!r} (fields: {', '.join(cls.fields)})"
        )
    return cls.fields[name]


def _spec_from_dump(
    item: Mapping[str, Any], custom_types: Mapping[str, Any] | None, allow_modules: Collection[str] | None
) -> FieldSpec:
    role: FieldRole = item["role"]
    if role not in ("input", "output"):
        raise SignatureError(f"field {item.get('name')!r} has role {role!r}; expected 'input' or 'output'")
    annotation = string_to_type(item["type"], custom_types, allow_modules=allow_modules)
    info = FieldInfo(role, item.get("desc", ""), item.get("prefix"), dict(item.get("constraints") or {}))
    return FieldSpec.build(item["name"], info, annotation)


# -- constructors ----------------------------------------------------------------------------

SignatureSpec = str | Mapping[str, Any] | type[Signature]


def make_signature(
    spec: SignatureSpec,
    instructions: str | None = None,
    *,
    custom_types: Mapping[str, Any] | None = None,
    name: str = _DEFAULT_NAME,
) -> type[Signature]:
    """Build a signature class.

    ``spec`` is a string (``"question, context: list[str] -> answer: int"``), a mapping
    ``{name: (type, InputField(...))}`` (or ``{name: OutputField(...)}`` for a str field), or a
    signature class (returned as is, or with new ``instructions``). Without ``instructions`` (or with ""), the
    default is DSPy's: ``"Given the fields `question`, produce the fields `answer`."``.
    ``custom_types`` maps names used in the string to types: ``{"Answer": Answer}``.
    """
    if isinstance(spec, type) and issubclass(spec, Signature):
        return spec if instructions is None else spec.with_instructions(instructions)
    if isinstance(spec, str):
        parsed = parse_signature_string(spec, custom_types=custom_types)
        specs = [FieldSpec.build(p.name, _info(p.role), p.annotation) for p in parsed]
    elif isinstance(spec, Mapping):
        specs = [_spec_from_mapping_item(key, value) for key, value in spec.items()]
    else:
        kind = type(spec).__name__
        raise SignatureError(f"cannot make a signature from a {kind}; pass a string, mapping or class")
    return _build(name, specs, instructions)


def _info(role: FieldRole) -> FieldInfo:
    return typing.cast(FieldInfo, InputField() if role == "input" else OutputField())


def _spec_from_mapping_item(name: Any, value: Any) -> FieldSpec:
    if not isinstance(name, str):
        raise SignatureError(f"field names must be strings, got {name!r}")
    annotation, info = value if isinstance(value, tuple) and len(value) == 2 else (str, value)
    if not isinstance(info, FieldInfo):
        raise SignatureError(f"field {name!r}: expected (type, InputField()/OutputField()), got {value!r}")
    return FieldSpec.build(name, info, str if annotation is None else annotation)


def ensure_signature(value: SignatureSpec, instructions: str | None = None) -> type[Signature]:
    """``value`` as a signature class: strings and mappings go through :func:`make_signature`."""
    if isinstance(value, type) and issubclass(value, Signature):
        if instructions is not None:
            raise SignatureError("instructions can only be given with a signature string or mapping")
        return value
    return make_signature(value, instructions)
