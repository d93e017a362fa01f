"""Optional dependencies imported on first use (DSPy's ``dspy.utils.lazy_import``).

``np = require("numpy")`` at module level costs nothing: the import happens when ``np`` is first
used, so ``import dspex`` works without the optional package. When the package is not installed,
``require`` hands back a placeholder whose first use raises ``ImportError`` naming what to install
and the line that asked for it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import linecache
import sys
import threading
import types
from typing import Any, Final

__all__ = ["is_available", "require"]

# Import name -> the dspex extra that installs it; a module not listed is installed by its own name.
_INSTALL_HINTS: Final[dict[str, str]] = {
    "mcp": "mcp",
    "mlflow": "mlflow",
    "opentelemetry": "tracing",
}

_locks: dict[str, threading.RLock] = {}
_locks_guard = threading.Lock()


def _detect_dspy_dist() -> str:
    """The distribution whose extras the install hints name (DSPy's function name; this package)."""
    return "dspex"


def _lock_for(module: str) -> threading.RLock:
    with _locks_guard:
        return _locks.setdefault(module, threading.RLock())


class _MissingModule(types.ModuleType):
    """Placeholder for a package that is not installed: any attribute raises ``ImportError``."""

    def __init__(self, module: str, message: str, origin: str) -> None:
        super().__init__(module)
        self._dspex_message = message
        self._dspex_origin = origin

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # copy/pickle/inspect probing must not look like a missing package
            raise AttributeError(attr)
        raise ImportError(f"{self._dspex_message}\n\nAsked for at {self._dspex_origin}")


class _LazyModule(types.ModuleType):
    """Stands for an installed module until first use, then passes everything to the real one.

    The real module is imported under a lock per module name, so two threads using it for the first
    time at once see one fully initialised module. Setting an attribute sets it on the real module,
    so configuration written through the proxy takes effect.
    """

    def __init__(self, module: str, spec: importlib.machinery.ModuleSpec, lock: threading.RLock) -> None:
        super().__init__(module)
        object.__setattr__(self, "__spec__", spec)
        object.__setattr__(self, "_dspex_lock", lock)

    def _dspex_load(self) -> types.ModuleType:
        lock: threading.RLock = object.__getattribute__(self, "_dspex_lock")
        with lock:
            return importlib.import_module(self.__name__)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._dspex_load(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._dspex_load(), attr, value)

    def __dir__(self) -> list[str]:
        return dir(self._dspex_load())


@functools.cache
def is_available(module: str) -> bool:
    """Whether ``module`` could be imported; finds it without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, *, extra: str | None = None, feature: str | None = None) -> Any:
    """``module``, imported on first use; a placeholder that raises on use if it is not installed.

    ``extra`` names the dspex extra that installs it, ``feature`` what needs it (both only shape the
    error message). An already imported module is returned as it is.
    """
    lock = _lock_for(module)
    with lock:
        if module in sys.modules:
            return sys.modules[module]
        spec = _find(module)
    if spec is None or spec.loader is None:
        return _MissingModule(module, _install_message(module, extra, feature), _caller())
    return _LazyModule(module, spec, lock)


def _find(module: str) -> importlib.machinery.ModuleSpec | None:
    try:
        return importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a submodule whose parent package is not installed
        return None


def _install_message(module: str, extra: str | None, feature: str | None) -> str:
    top = module.split(".", 1)[0]
    needed_by = feature or "this feature"
    chosen = extra or _INSTALL_HINTS.get(top)
    if chosen is None:  # no extra of ours installs it: name the package itself
        return f"{top} is required to use {needed_by}. Install it with `pip install {top}`."
    dist = _detect_dspy_dist()
    return f"{top} is required to use {needed_by}. Install it with `pip install {dist}[{chosen}]`."


def _caller() -> str:
    frame = sys._getframe(2)  # the caller of require()
    where = frame.f_code
    code = linecache.getline(where.co_filename, frame.f_lineno).strip()
    return f"{where.co_filename}:{frame.f_lineno} in {where.co_name}: {code}"
