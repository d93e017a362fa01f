"""The sandbox's errors: every one is a ``CodeInterpreterError``, so DSPy-style handlers keep working.

::

    CodeInterpreterError                 (dspex.primitives.code_interpreter)
    ├── SandboxError                     the session is lost; ``kind`` says why (for metrics)
    │   ├── SandboxStartupError          Deno/Pyodide missing, broken or too slow to start
    │   ├── SandboxTimeoutError          an execution ran past its wall-time limit
    │   ├── SandboxMemoryError           the Deno process grew past its memory limit
    │   └── SandboxCrashError            the process died or broke the protocol
    └── CodeExecutionError
        └── SandboxOutputError           the code printed past the output limit (session kept)
"""

from __future__ import annotations

from typing import Literal

from dspex.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError

__all__ = [
    "FailureKind",
    "SandboxCrashError",
    "SandboxError",
    "SandboxMemoryError",
    "SandboxOutputError",
    "SandboxStartupError",
    "SandboxTimeoutError",
]

FailureKind = Literal["startup", "timeout", "memory", "crash", "output"]


class SandboxError(CodeInterpreterError):
    """The sandbox process is gone (killed or dead): create a new interpreter for a fresh session."""

    kind: FailureKind = "crash"


class SandboxStartupError(SandboxError):
    """Deno or Pyodide is missing, broken or did not start in time; the message names the fix."""

    kind: FailureKind = "startup"


class SandboxTimeoutError(SandboxError):
    """An execution ran past its wall-time limit; the process was killed."""

    kind: FailureKind = "timeout"


class SandboxMemoryError(SandboxError):
    """The Deno process's resident memory passed its limit; the process was killed."""

    kind: FailureKind = "memory"


class SandboxCrashError(SandboxError):
    """The Deno process exited or broke the protocol."""

    kind: FailureKind = "crash"


class SandboxOutputError(CodeExecutionError):
    """The code's output passed the limit; the code was stopped, the session lives on."""

    kind: FailureKind = "output"
