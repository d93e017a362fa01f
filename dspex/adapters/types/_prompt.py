"""What the special types change in a prompt's text (DSPy 3.4.1's wording); used by ``_render``.

- ``Reasoning`` reads as ``str`` (it replaced ChainOfThought's text field) and gets no type note;
- ``Code[...]`` already describes its format, so its output gets no JSON-schema note;
- every ``Type`` with a :meth:`~dspex.Type.description` adds a line under its field.
"""

from __future__ import annotations

import inspect
from typing import Any

from dspex.adapters.types.base_type import Type
from dspex.adapters.types.code import Code
from dspex.adapters.types.reasoning import Reasoning

__all__ = ["custom_type_descriptions", "is_custom_type", "is_reasoning", "skips_type_note"]


def is_reasoning(annotation: Any) -> bool:
    """Whether ``annotation`` is ``Reasoning`` (named ``str`` in prompts)."""
    return annotation is Reasoning


def skips_type_note(annotation: Any) -> bool:
    """Whether an output of this type gets no ``# note: the value you produce ...`` line."""
    if annotation is Reasoning:
        return True
    return inspect.isclass(annotation) and issubclass(annotation, Code) and bool(annotation.description())


def custom_type_descriptions(annotation: Any) -> list[tuple[type[Type], str]]:
    """The special types in ``annotation`` that describe themselves, with their descriptions."""
    found = Type.extract_custom_type_from_annotation(annotation)
    return [(kind, kind.description()) for kind in found if kind.description()]


def is_custom_type(annotation: Any) -> bool:
    """Whether ``annotation`` is a ``Type`` subclass (its values may parse from raw LM text)."""
    return inspect.isclass(annotation) and issubclass(annotation, Type)
