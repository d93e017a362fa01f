"""Examples, predictions, and the :class:`Module` base that every program is built from.

The submodules follow DSPy's layout (``dspex.primitives.example``, ``.prediction``, ``.module``), so
``from dspy.primitives.prediction import Prediction`` keeps working with ``dspex`` in its place.
"""

from __future__ import annotations

from dspex.primitives.example import Example
from dspex.primitives.module import (
    Module,
    TraceStep,
    detached_trace,
    record_trace_step,
    set_attribute_by_name,
)
from dspex.primitives.prediction import Completions, Prediction

BaseModule = Module  # DSPy's base class name; dspex has one Module base

__all__ = [
    "BaseModule",
    "Completions",
    "Example",
    "Module",
    "Prediction",
    "TraceStep",
    "detached_trace",
    "record_trace_step",
    "set_attribute_by_name",
]
