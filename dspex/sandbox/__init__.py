"""The code sandbox behind ``PythonInterpreter``: Deno + Pyodide, offline, bounded, pooled.

- ``runner.js``: the Deno side (imports only the pinned ``npm:pyodide`` and Deno built-ins);
- ``_guest.py``: the Python that runner loads into Pyodide (namespace, SUBMIT, tools, output bound);
- ``process.py``: one Deno process and the host's half of the line protocol, with the limits;
- ``pool.py``: ``SandboxPool``, warm processes per worker, usable as an ``interpreter_factory``;
- ``install.py``: where the runtime is cached and how ``make install`` fills the cache;
- ``errors.py``: ``SandboxError`` and its kinds (startup, timeout, memory, crash, output).

The interpreter itself is :class:`dspex.primitives.python_interpreter.PythonInterpreter`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SandboxError", "SandboxLimits", "SandboxPool"]

_EXPORTS = {
    "SandboxError": "dspex.sandbox.errors",
    "SandboxLimits": "dspex.sandbox.process",
    "SandboxPool": "dspex.sandbox.pool",
}


def __getattr__(name: str) -> Any:
    # lazy: pool.py imports the interpreter, which imports this package's install module
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dspex.sandbox' has no attribute {name!r}")
