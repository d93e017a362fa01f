"""How a predictor checks the inputs of a call, as DSPy 3.4.1 does: it warns, it does not refuse.

- an input field left out gets its declared default (``InputField(default=...)``);
- fields the signature does not have are logged ("... not in signature ...") and passed on;
- a required field left out is logged ("Not all input fields were provided ...; Missing: [...]");
  a field whose type admits None may be left out silently;
- with ``settings.warn_on_type_mismatch`` (the default), a value whose type does not fit the field's
  annotation is logged ("Type mismatch for field 'x': expected list[str] ...").

Everything that depends on the signature alone is worked out once per signature class
(:func:`input_plan`), so a call costs a few dict lookups and one ``isinstance`` per typed field.
"""

from __future__ import annotations

import logging
import types
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from dspex.adapters.types.base_type import Type, has_custom_type_marker
from dspex.signatures import IS_TYPE_UNDEFINED, Signature

__all__ = ["InputPlan", "check_inputs", "input_plan", "is_value_compatible", "type_name"]

logger = logging.getLogger("dspex.modules.predict")

Check = Callable[[Any], bool]


@dataclass(frozen=True)
class InputPlan:
    """What a signature's input fields ask of a call's inputs."""

    names: frozenset[str]
    ordered: tuple[str, ...]
    defaults: tuple[tuple[str, Any], ...]
    required: tuple[str, ...]  # left out, these are reported (their type does not admit None)
    typed: tuple[tuple[str, Any, Check], ...]  # (name, annotation, check) of fields with a declared type


# Signature classes compare by content, so they are keyed here by identity (with a weak reference,
# so a signature built on the fly does not live forever because it was called once).
_PLANS: dict[int, tuple[weakref.ref[type[Signature]], InputPlan]] = {}


def input_plan(signature: type[Signature]) -> InputPlan:
    """The (cached) :class:`InputPlan` of ``signature``."""
    entry = _PLANS.get(id(signature))
    if entry is not None and entry[0]() is signature:
        return entry[1]
    plan = _build_plan(signature)
    key = id(signature)
    _PLANS[key] = (weakref.ref(signature, lambda _ref: _PLANS.pop(key, None)), plan)
    return plan


def _build_plan(signature: type[Signature]) -> InputPlan:
    fields = signature.input_fields
    defaults = tuple((n, f.default) for n, f in fields.items() if f.default is not PydanticUndefined)
    required = tuple(n for n, f in fields.items() if not allows_none(f.annotation))
    typed = tuple(
        (name, field.annotation, _checker(field.annotation))
        for name, field in fields.items()
        if not (field.json_schema_extra or {}).get(IS_TYPE_UNDEFINED, False)  # type: ignore[union-attr]
    )
    return InputPlan(frozenset(fields), tuple(fields), defaults, required, typed)


def check_inputs(plan: InputPlan, inputs: dict[str, Any], *, warn_on_type_mismatch: bool) -> None:
    """Fill declared defaults into ``inputs`` (in place) and log what DSPy logs about them."""
    for name, default in plan.defaults:
        if name not in inputs:
            inputs[name] = default
    if len(inputs) != len(plan.names) or any(name not in plan.names for name in inputs):
        _report_extra_and_missing(plan, inputs)
    if warn_on_type_mismatch:
        for name, annotation, check in plan.typed:
            value = inputs.get(name)
            if value is not None and not check(value):
                logger.warning(
                    "Type mismatch for field '%s': expected %s based on given Signature, "
                    "but the provided value is incompatible: %s.",
                    name,
                    type_name(annotation),
                    value,
                )


def _report_extra_and_missing(plan: InputPlan, inputs: Mapping[str, Any]) -> None:
    extra = [name for name in inputs if name not in plan.names]
    if extra:
        logger.warning(
            "Input contains fields not in signature. These fields will be ignored: %s. Expected fields: %s.",
            extra,
            list(plan.ordered),
        )
    missing = [name for name in plan.required if name not in inputs]
    if missing:
        present = [name for name in plan.ordered if name in inputs]
        logger.warning(
            "Not all input fields were provided to module. Present: %s. Missing: %s.", present, missing
        )


# -- types ----------------------------------------------------------------------------------------


def allows_none(annotation: Any) -> bool:
    """Whether ``annotation`` admits None (``str | None``, ``Optional[str]``, ``None``)."""
    if annotation is None or annotation is type(None):
        return True
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return any(allows_none(arg) for arg in get_args(annotation))
    if origin is not None and getattr(origin, "__name__", "") == "Annotated":
        return allows_none(get_args(annotation)[0])
    return False


def _checker(annotation: Any) -> Check:
    # The common case, a plain class, as one isinstance (str also takes a list of str, as DSPy allows).
    if annotation is str:
        return lambda value: isinstance(value, str) or _all_str(value)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return lambda value: isinstance(value, annotation) or _wire_form(value, annotation)
    if isinstance(annotation, type) and get_origin(annotation) is None and not get_args(annotation):
        return lambda value: isinstance(value, annotation)
    return lambda value: is_value_compatible(value, annotation)


def _wire_form(value: Any, annotation: type[BaseModel]) -> bool:
    # How an Image, a History or another model arrives in a worker: a special type's formatted
    # (marked) text, or the model's dump, which the adapters format as they do the object. Not a
    # mismatch, so no warning (one quoting megabytes of image data, once per task).
    if isinstance(value, str):
        return issubclass(annotation, Type) and has_custom_type_marker(value)
    return isinstance(value, dict) and bool(value) and set(value) <= set(annotation.model_fields)


def _all_str(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def is_value_compatible(value: Any, expected: Any) -> bool:
    """Whether ``value`` fits the type hint ``expected`` (a str field also takes a list of str)."""
    if expected is str and _all_str(value):
        return True
    return _fits(value, expected)


def _fits(value: Any, expected: Any) -> bool:
    if expected is Any:
        return True
    origin, args = get_origin(expected), get_args(expected)
    if origin is Union or origin is types.UnionType:
        return any(_fits(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin in (list, set, frozenset):
        return isinstance(value, origin) and (not args or all(_fits(item, args[0]) for item in value))
    if origin is dict:
        return isinstance(value, dict) and (
            not args or all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
        )
    if origin is tuple:
        return isinstance(value, tuple) and _fits_tuple(value, args)
    if expected is None or expected is type(None):
        return value is None
    if isinstance(expected, type):
        return isinstance(value, expected)
    return False


def _fits_tuple(value: tuple[Any, ...], args: tuple[Any, ...]) -> bool:
    if not args:
        return True
    if len(args) == 2 and args[1] is Ellipsis:
        return all(_fits(item, args[0]) for item in value)
    return len(value) == len(args) and all(_fits(item, arg) for item, arg in zip(value, args, strict=True))


def type_name(annotation: Any) -> str:
    """A type hint as DSPy writes it in its warnings: ``int``, ``list[str]``, ``Literal['a', 'b']``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is None:
        return getattr(annotation, "__name__", str(annotation))
    if origin is Literal:
        return f"Literal[{', '.join(repr(arg) for arg in args)}]"
    if args:
        inner = ", ".join("..." if arg is Ellipsis else type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(origin, "__name__", str(origin))
