"""Signatures: the typed inputs and outputs of an LM call, and the instructions for it.

Two ways to write one::

    class QA(Signature):
        \"\"\"Answer the question with a number.\"\"\"
        question: str = InputField()
        answer: int = OutputField(desc="a number")

    QA2 = Signature("question -> answer: int", "Answer the question with a number.")

A signature is a class; the helpers (``with_instructions``, ``append``, ``delete``...) return new
classes and leave the original alone. Instantiating a signature class with values
(``QA(question="...", answer=3)``) gives a record of those values, as in DSPy. Two signature classes
are ``==`` when their content (fields, types, descriptions, instructions) is the same; ``equals``
is DSPy's comparison (instructions and each field's ``json_schema_extra``).
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar

from dspex.errors import SignatureError
from dspex.ids import canonical_json
from dspex.signatures._fields import (
    IS_TYPE_UNDEFINED,
    FieldInfo,
    FieldRole,
    FieldSpec,
    InputField,
    OutputField,
    declare,
)
from dspex.signatures._parse import parse_signature_string
from dspex.signatures._types import string_to_type, type_to_string

__all__ = ["Signature", "default_instructions", "ensure_signature", "make_signature"]

# The namespace key that hands already-resolved fields to a class built by make_signature/helpers.
_SPECS_KEY = "_dspex_field_specs"
_DEFAULT_NAME = "StringSignature"
_MAX_FRAMES = 100


def default_instructions(inputs: Collection[str], outputs: Collection[str]) -> str:
    """DSPy's instructions for a signature without any: "Given the fields `a`, produce the fields `b`."."""
    given = ", ".join(f"`{name}`" for name in inputs)
    produce = ", ".join(f"`{name}`" for name in outputs)
    return f"Given the fields {given}, produce the fields {produce}."


class _SignatureMeta(type):
    """The class-level API of signatures (``fields``, ``instructions``...), kept on the metaclass as
    DSPy does, so that a field may take any name an instance attribute can; plus equality, hashing,
    repr, and ``Signature("a -> b")`` making a new class."""

    _dspex_inputs: dict[str, FieldSpec]
    _dspex_outputs: dict[str, FieldSpec]
    _dspex_fields: dict[str, FieldSpec]
    _dspex_instructions: str
    _dspex_dump_text: str | None

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Signature:
            # Signature("a -> b") makes a class; types named in the string are looked up from here.
            kwargs.setdefault("_caller", sys._getframe(1))
            return make_signature(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    @property
    def instructions(cls) -> str:
        """The instructions: the class docstring, or DSPy's default text for the fields."""
        return cls._dspex_instructions

    @instructions.setter
    def instructions(cls, instructions: str) -> None:
        # DSPy allows assigning instructions on a class; later calls see the new text.
        if not isinstance(instructions, str):
            raise SignatureError(f"instructions must be a string, got {type(instructions).__name__}")
        cls._dspex_instructions = instructions
        cls.__doc__ = instructions
        cls._dspex_dump_text = None

    @property
    def input_fields(cls) -> dict[str, FieldSpec]:
        """The input fields, in order: ``name -> FieldSpec`` (a pydantic ``FieldInfo``)."""
        return cls._dspex_inputs

    @property
    def output_fields(cls) -> dict[str, FieldSpec]:
        """The output fields, in order."""
        return cls._dspex_outputs

    @property
    def fields(cls) -> dict[str, FieldSpec]:
        """All fields, inputs first."""
        return cls._dspex_fields

    @property
    def signature(cls) -> str:
        """The fields as a signature string: ``"question, context -> answer"``."""
        return f"{', '.join(cls._dspex_inputs)} -> {', '.join(cls._dspex_outputs)}"

    @property
    def signature_string(cls) -> str:
        """The same as :attr:`signature` (dspex's earlier name)."""
        return cls.signature

    def __eq__(cls, other: object) -> bool:
        if cls is other:
            return True
        if not isinstance(other, _SignatureMeta):
            return NotImplemented
        return cls._content_text() == other._content_text()

    def __hash__(cls) -> int:
        return hash(cls._content_text())

    def __repr__(cls) -> str:
        lines = [f"{name} = Field({spec!r})" for name, spec in cls._dspex_fields.items()]
        body = "\n    ".join([f"instructions={cls.instructions!r}", *lines])
        return f"{cls.__name__}({cls.signature}\n    {body}\n)"

    def _content_text(cls) -> str:
        cached = cls.__dict__.get("_dspex_dump_text")
        if cached is None:
            cached = canonical_json(_content(cls))  # type: ignore[arg-type]
            cls._dspex_dump_text = cached
        return str(cached)


class Signature(metaclass=_SignatureMeta):
    """Base class of every signature. Subclass it with annotated fields; the docstring is the instructions.

    Class-level API (on the class, as in DSPy): ``instructions``, ``input_fields`` /
    ``output_fields`` / ``fields`` (ordered ``name -> FieldSpec``, inputs first), ``signature``
    (``"question, context -> answer"``), and the helpers below, which return new classes.
    """

    _dspex_inputs: ClassVar[dict[str, FieldSpec]] = {}
    _dspex_outputs: ClassVar[dict[str, FieldSpec]] = {}
    _dspex_fields: ClassVar[dict[str, FieldSpec]] = {}
    _dspex_instructions: ClassVar[str] = ""
    _dspex_dump_text: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._dspex_own_doc = cls.__dict__.get("__doc__") is not None  # type: ignore[attr-defined]
        specs = cls.__dict__.get(_SPECS_KEY)
        if specs is None:
            specs = _class_form_specs(cls)
        _install(cls, list(specs), _class_instructions(cls, specs))

    # -- instances: a record of values, as a pydantic model instance is in DSPy -----------------
    def __init__(self, **values: Any) -> None:
        fields = type(self).fields
        missing = [name for name, spec in fields.items() if name not in values and spec.is_required()]
        if missing:
            raise SignatureError(f"{type(self).__name__} is missing value(s) for {', '.join(missing)}")
        for name, spec in fields.items():
            value = values[name] if name in values else spec.get_default(call_default_factory=True)
            setattr(self, name, value)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # instances hold values: not hashable, like pydantic's

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"{type(self).__name__}({values})"

    # -- immutable helpers ------------------------------------------------------------------
    @classmethod
    def with_instructions(cls, instructions: str) -> type[Signature]:
        """A new signature with the same fields and these instructions."""
        return _build(cls.__name__, cls.fields.values(), instructions)

    @classmethod
    def append_instructions(cls, instructions: str) -> type[Signature]:
        """A new signature with ``instructions`` added after the current ones, a blank line between."""
        return _build(cls.__name__, cls.fields.values(), f"{cls.instructions}\n\n{instructions}")

    @classmethod
    def insert(cls, index: int, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        """A new signature with ``field`` inserted at ``index`` among the inputs or the outputs (by its role).

        Negative indices count from the end, as in DSPy: ``-1`` appends. ``type_`` (a type or a type
        string) defaults to the field's own annotation, else ``str``.
        """
        spec = _spec_for(cls, name, field, type_)
        section = [s for s in cls.fields.values() if s.role == spec.role]
        position = index + len(section) + 1 if index < 0 else index
        if not 0 <= position <= len(section):
            where = f"the {len(section)} {spec.role} field(s) of {cls.signature!r}"
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
        """A new signature without the field ``name`` (the same fields if there is none, as in DSPy)."""
        return _build(cls.__name__, [s for s in cls.fields.values() if s.name != name], cls.instructions)

    @classmethod
    def with_updated_fields(cls, name: str, type_: Any = None, **kwargs: Any) -> type[Signature]:
        """A new signature where field ``name`` has ``kwargs`` merged into its ``json_schema_extra``
        (``prefix=``, ``desc=``...) and, if given, the type ``type_``."""
        old = _require_field(cls, name)
        changed = old._copy()
        changed.json_schema_extra = {**old.extra, **kwargs}
        new = FieldSpec.build(name, changed, old.annotation if type_ is None else _annotation(type_))
        specs = [new if s.name == name else s for s in cls.fields.values()]
        return _build(cls.__name__, specs, cls.instructions)

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
        info: FieldInfo
        if constraints is None:  # keep everything else the field has (default, pydantic arguments...)
            changes: dict[str, Any] = {} if prefix is None else {"prefix": prefix}
            if desc is not None:
                changes["desc"] = desc or f"${{{name}}}"
            info = old._copy()
            info.json_schema_extra = {**old.extra, **changes}
        else:
            info = declare(
                old.role,
                old.desc if desc is None else desc,
                old.prefix if prefix is None else prefix,
                constraints,
            )
        new = FieldSpec.build(name, info, old.annotation if type_ is None else _annotation(type_))
        specs = [new if s.name == name else s for s in cls.fields.values()]
        return _build(cls.__name__, specs, cls.instructions)

    @classmethod
    def equals(cls, other: Any) -> bool:
        """DSPy's comparison: the same instructions, field names and ``json_schema_extra`` per field."""
        if not isinstance(other, _SignatureMeta) or cls.instructions != other.instructions:
            return False
        if list(cls.fields) != list(other.fields):
            return set(cls.fields) == set(other.fields) and _same_extras(cls, other)
        return _same_extras(cls, other)

    # -- serialization ----------------------------------------------------------------------
    @classmethod
    def dump_state(cls) -> dict[str, Any]:
        """DSPy's saved form: ``{"instructions": ..., "fields": [{"prefix", "description"}, ...]}``."""
        fields = [
            {"prefix": spec.extra["prefix"], "description": spec.extra["desc"]}
            for spec in cls.fields.values()
        ]
        return {"instructions": cls.instructions, "fields": fields}

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> type[Signature]:
        """A new signature with the instructions and each field's prefix and description of ``state``
        (from :meth:`dump_state`; fields matched by position)."""
        try:
            saved = list(state["fields"])
            specs = list(cls.fields.values())
            for position, item in enumerate(saved[: len(specs)]):
                specs[position] = _with_extra(
                    specs[position], prefix=item["prefix"], desc=item["description"]
                )
            instructions = state["instructions"]
        except (KeyError, TypeError) as exc:
            raise SignatureError(f"not a saved signature state (missing or malformed {exc})") from exc
        return _build(cls.__name__, specs, instructions)

    @classmethod
    def dump(cls) -> dict[str, Any]:
        """dspex's full JSON form: ``{"instructions": ..., "fields": [{"name", "role", "type", "desc",
        "prefix", "constraints"}, ...]}``, types written by :func:`type_to_string`."""
        return _content(cls, type_text=type_to_string)

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


def _content(cls: type[Signature], type_text: Callable[[Any], str] | None = None) -> dict[str, Any]:
    """What defines a signature: instructions, and each field's name, role, type and texts."""
    write = type_text or _loose_type_text
    fields = [
        {
            "name": spec.name,
            "role": spec.role,
            "type": write(spec.annotation),
            "desc": spec.desc,
            "prefix": spec.prefix,
            "constraints": dict(spec.constraints),
        }
        for spec in cls.fields.values()
    ]
    return {"instructions": cls.instructions, "fields": fields}


def _loose_type_text(annotation: Any) -> str:
    # Equality and hashing work for every type; only dump() needs types that read back.
    try:
        return type_to_string(annotation)
    except SignatureError:
        return repr(annotation)


def _same_extras(cls: _SignatureMeta, other: _SignatureMeta) -> bool:
    mine, theirs = cls.fields, other.fields
    return all(mine[name].json_schema_extra == theirs[name].json_schema_extra for name in mine)


def _with_extra(spec: FieldSpec, **changes: Any) -> FieldSpec:
    changed = spec._copy()
    changed.json_schema_extra = {**spec.extra, **changes}
    return FieldSpec.build(spec.name, changed, spec.annotation)


def _install(cls: type[Signature], specs: list[FieldSpec], instructions: str) -> None:
    _check_unique(specs)
    cls._dspex_inputs = {s.name: s for s in specs if s.role == "input"}
    cls._dspex_outputs = {s.name: s for s in specs if s.role == "output"}
    cls._dspex_fields = {**cls._dspex_inputs, **cls._dspex_outputs}
    cls._dspex_instructions = instructions
    cls._dspex_dump_text = None


def _build(name: str, specs: Collection[FieldSpec], instructions: str | None) -> type[Signature]:
    if instructions is not None and not isinstance(instructions, str):
        raise SignatureError(f"instructions must be a string, got {type(instructions).__name__}")
    if not instructions:  # None or "": DSPy's default, for the fields the new class has
        instructions = _default_for(specs)
    namespace: dict[str, Any] = {_SPECS_KEY: tuple(specs), "__module__": __name__}
    namespace["__doc__"] = instructions
    return typing.cast("type[Signature]", type(name, (Signature,), namespace))


def _check_unique(specs: list[FieldSpec]) -> None:
    seen: dict[str, FieldRole] = {}
    for spec in specs:
        if spec.name in seen:
            if seen[spec.name] != spec.role:
                raise SignatureError(
                    f"Input and output fields must have distinct names, but found duplicates: {spec.name!r}"
                )
            raise SignatureError(f"duplicate field name {spec.name!r}")
        seen[spec.name] = spec.role


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
    """Fields of a class-form signature: the bases' fields, then this class's fields in body order."""
    specs: dict[str, FieldSpec] = {}
    for base in reversed(cls.__mro__[1:]):
        if isinstance(base, _SignatureMeta):
            specs.update(base.fields)
    own = _own_field_infos(cls)
    hints = _type_hints(cls, own)
    for name, info in own.items():
        if name in hints:
            specs[name] = FieldSpec.build(name, info, hints[name])
        else:  # no annotation: str, marked as DSPy marks it
            specs[name] = _with_extra(FieldSpec.build(name, info, str), **{IS_TYPE_UNDEFINED: True})
    return _inputs_first(list(specs.values()))


def _inputs_first(specs: list[FieldSpec]) -> list[FieldSpec]:
    return [s for s in specs if s.role == "input"] + [s for s in specs if s.role == "output"]


def _own_field_infos(cls: type) -> dict[str, FieldInfo]:
    annotations = inspect.get_annotations(cls)
    declared = {name: value for name, value in cls.__dict__.items() if isinstance(value, FieldInfo)}
    for name in annotations:
        if name not in declared and not _is_classvar(annotations[name]):
            raise SignatureError(
                f"field {name!r} of signature {cls.__name__} is neither an input nor an output: "
                f"write `{name}: ... = InputField()` or `= OutputField()`"
            )
    for name in declared:  # the values are markers, not attributes: keep them off the class
        delattr(cls, name)
    return declared


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar")) or typing.get_origin(annotation) is ClassVar


def _type_hints(cls: type, own: Mapping[str, FieldInfo]) -> dict[str, Any]:
    """Resolve this class's annotations, so ``from __future__ import annotations`` in user code works."""
    annotations = inspect.get_annotations(cls)
    if not any(isinstance(annotations.get(name), str) for name in own):
        return {name: annotations[name] for name in own if name in annotations}
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError, AttributeError) as exc:
        raise SignatureError(f"cannot resolve the field types of signature {cls.__name__}: {exc}") from exc
    return {name: hints[name] for name in own if name in hints}


def _annotation(type_: Any) -> Any:
    return string_to_type(type_) if isinstance(type_, str) else type_


def _spec_for(cls: type[Signature], name: str, field: FieldInfo, type_: Any) -> FieldSpec:
    if not isinstance(field, FieldInfo):
        raise SignatureError(f"field {name!r} needs InputField(...) or OutputField(...), got {field!r}")
    if name in cls.fields:
        raise SignatureError(f"signature {cls.signature!r} already has a field {name!r}")
    if type_ is None:
        type_ = field.annotation
    return FieldSpec.build(name, field, str if type_ is None else _annotation(type_))


def _require_field(cls: type[Signature], name: str) -> FieldSpec:
    if name not in cls.fields:
        known = ", ".join(cls.fields)
        raise SignatureError(f"signature {cls.signature!r} has no field {name!r} (fields: {known})")
    return cls.fields[name]


def _spec_from_dump(
    item: Mapping[str, Any], custom_types: Mapping[str, Any] | None, allow_modules: Collection[str] | None
) -> FieldSpec:
    role: FieldRole = item["role"]
    if role not in ("input", "output"):
        raise SignatureError(f"field {item.get('name')!r} has role {role!r}; expected 'input' or 'output'")
    annotation = string_to_type(item["type"], custom_types, allow_modules=allow_modules)
    info = declare(role, item.get("desc") or None, item.get("prefix"), item.get("constraints") or {})
    return FieldSpec.build(item["name"], info, annotation)


# -- constructors ----------------------------------------------------------------------------

SignatureSpec = str | Mapping[str, Any] | type[Signature]


def make_signature(
    signature: SignatureSpec,
    instructions: str | None = None,
    signature_name: str = _DEFAULT_NAME,
    custom_types: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    _caller: types.FrameType | None = None,
) -> type[Signature]:
    """Build a signature class.

    ``signature`` is a string (``"question, context: list[str] -> answer: int"``), a mapping
    ``{name: (type, InputField(...))}`` (or ``{name: OutputField(...)}`` for a str field), or a
    signature class (returned as is, or with new ``instructions``). Without ``instructions`` (or with
    ""), the default is DSPy's: ``"Given the fields `question`, produce the fields `answer`."``.
    Types named in a string resolve from ``custom_types`` (``{"Answer": Answer}``), the builtins and
    ``typing`` names, ``"pkg.module:Name"`` import paths, and otherwise, as in DSPy, from the
    caller's scope (local then global names, walking up the calling frames).
    ``name`` (or DSPy's ``signature_name``) names the class.
    """
    class_name = name or signature_name
    if isinstance(signature, type) and issubclass(signature, Signature):
        return signature if instructions is None else signature.with_instructions(instructions)
    if isinstance(signature, str):
        scope = _CallerScope(_caller or sys._getframe(1))
        parsed = parse_signature_string(signature, custom_types=custom_types, lookup=scope.lookup)
        specs = [FieldSpec.build(p.name, _declared(p.role, p.typed), p.annotation) for p in parsed]
    elif isinstance(signature, Mapping):
        specs = [_spec_from_mapping_item(key, value) for key, value in signature.items()]
    else:
        kind = type(signature).__name__
        raise SignatureError(f"cannot make a signature from a {kind}; pass a string, mapping or class")
    return _build(class_name, specs, instructions)


def _declared(role: FieldRole, typed: bool) -> FieldInfo:
    # DSPy marks string-form inputs with whether their type was written (outputs are not marked).
    if role == "input":
        return typing.cast(FieldInfo, InputField(**{IS_TYPE_UNDEFINED: not typed}))
    return typing.cast(FieldInfo, OutputField())


class _CallerScope:
    """Names visible where a signature string was written: each calling frame's locals, then globals.

    dspex's own frames are skipped, so only user code decides what a name means.
    """

    def __init__(self, frame: types.FrameType | None) -> None:
        self.frame = frame

    def lookup(self, name: str) -> Any:
        frame, seen = self.frame, 0
        while frame is not None and seen < _MAX_FRAMES:
            seen += 1
            module = str(frame.f_globals.get("__name__", ""))
            if module != "dspex" and not module.startswith("dspex."):
                for namespace in (frame.f_locals, frame.f_globals):
                    if name in namespace:
                        return namespace[name]
            frame = frame.f_back
        raise KeyError(name)


def _spec_from_mapping_item(name: Any, value: Any) -> FieldSpec:
    if not isinstance(name, str):
        raise SignatureError(f"field names must be strings, got {name!r}")
    if isinstance(value, FieldInfo):
        annotation, info = value.annotation, value
    elif isinstance(value, tuple) and len(value) == 2:
        annotation, info = value
    else:
        raise SignatureError(f"field {name!r}: expected (type, InputField()/OutputField()), got {value!r}")
    if not isinstance(info, FieldInfo):
        raise SignatureError(f"field {name!r}: expected (type, InputField()/OutputField()), got {value!r}")
    annotation = str if annotation is None else annotation
    if not _is_type_like(annotation):
        raise SignatureError(f"field {name!r}: the type must be a type, got {annotation!r}")
    return FieldSpec.build(name, info, annotation)


def _is_type_like(annotation: Any) -> bool:
    return (
        isinstance(annotation, type | types.UnionType | types.GenericAlias)
        or typing.get_origin(annotation) is not None
        or annotation is Any
        or type(annotation).__module__ == "typing"
    )


def ensure_signature(signature: SignatureSpec, instructions: str | None = None) -> type[Signature]:
    """``signature`` as a signature class: strings and mappings go through :func:`make_signature`."""
    if isinstance(signature, type) and issubclass(signature, Signature):
        if instructions is not None:
            raise SignatureError("Don't specify instructions when initializing with a Signature")
        return signature
    return make_signature(signature, instructions, _caller=sys._getframe(1))
