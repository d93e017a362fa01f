"""Examples, predictions, the :class:`Module` base that every program is built from, and the
code-interpreter interface that ``RLM`` and ``ProgramOfThought`` run code through.

The submodules follow DSPy's layout (``dspex.primitives.example``, ``.prediction``, ``.module``,
``.code_interpreter``, ``.repl_types``...), so ``from dspy.primitives.prediction import Prediction``
keeps working with ``dspex`` in its place. ``PythonInterpreter`` (the Deno/Pyodide sandbox) and
``LocalInterpreter`` (a local subprocess, not a sandbox) are imported on first use only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dspex.primitives.code_interpreter import (
    CodeExecutionError,
    CodeInterpreter,
    CodeInterpreterError,
    FinalOutput,
    resolve_interpreter_factory,
)
from dspex.primitives.example import Example
from dspex.primitives.module import (
    Module,
    TraceStep,
    detached_trace,
    record_trace_step,
    set_attribute_by_name,
)
from dspex.primitives.prediction import Completions, Prediction
from dspex.primitives.sandbox_serializable import SandboxSerializable

if TYPE_CHECKING:
    from dspex.primitives.local_interpreter import LocalInterpreter
    from dspex.primitives.python_interpreter import PythonInterpreter

BaseModule = Module  # DSPy's base class name; dspex has one Module base

# name -> the submodule that defines it, imported when the name is first read
_LAZY = {
    "PythonInterpreter": "dspex.primitives.python_interpreter",
    "LocalInterpreter": "dspex.primitives.local_interpreter",
}

__all__ = [
    "BaseModule",
    "CodeExecutionError",
    "CodeInterpreter",
    "CodeInterpreterError",
    "Completions",
    "Example",
    "FinalOutput",
    "LocalInterpreter",
    "Module",
    "Prediction",
    "PythonInterpreter",
    "SandboxSerializable",
    "TraceStep",
    "detached_trace",
    "record_trace_step",
    "resolve_interpreter_factory",
    "set_attribute_by_name",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # cache: the next lookup does not come here
    return value
