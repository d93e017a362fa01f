"""The disk side of :class:`dspex.lm.cache.Cache`: a restricted unpickler, and the LM write-behind thread.

Restricted mode (``Cache(restrict_pickle=True)``): a value read back from disk may only rebuild
classes on an allowlist, so a cache directory written by someone else cannot run code on load. Plain
containers and scalars never name a class in a pickle and always load; besides them the list holds
numpy arrays (what embedders return), the response models of ``litellm.types.*`` and ``openai.types.*``
(data classes only), and the ``safe_types`` the caller names. Anything else, and any blob that does
not unpickle, raises :class:`DeserializationError` (DSPy's names: ``DeserializationError``,
``restricted_disk``), which the cache turns into a miss.

Write-behind: an LM call must not wait on a disk write (another process may hold the file's write
lock), so LM responses go to one daemon thread per cache that writes them in order; the memory
layer has the response at once, and :meth:`DiskWriter.flush` waits for the disk.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import queue
import threading
from collections.abc import Iterable
from typing import Any, BinaryIO

from diskcache import Disk
from diskcache.core import MODE_PICKLE

from dspex.errors import DspexError

__all__ = ["DeserializationError", "DiskWriter", "allowed_pairs", "restricted_disk"]

logger = logging.getLogger(__name__)

_TRUSTED_PREFIXES = ("litellm.types.", "openai.types.")
# What numpy needs to rebuild an ndarray and its dtype (module names before and after numpy 2).
_NUMPY_NAMES = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class DeserializationError(DspexError):
    """A disk cache entry that cannot be read back (a class off the allowlist, or corrupt bytes);
    never leaves the cache, which reads it as a miss."""


class _AllowlistUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        pair = (module, name)
        if module.startswith(_TRUSTED_PREFIXES) or pair in _NUMPY_NAMES or pair in self._allowed:
            return super().find_class(module, name)
        raise DeserializationError(
            f"cache entry needs {module}.{name}, which is not an allowed type; "
            "add it with configure_cache(restrict_pickle=True, safe_types=[...])"
        )


def _restricted_load(file: BinaryIO, allowed: frozenset[tuple[str, str]]) -> Any:
    try:
        return _AllowlistUnpickler(file, allowed).load()
    except DeserializationError:
        raise
    except Exception as exc:  # any unpickling failure is a corrupt entry
        raise DeserializationError(f"corrupt cache entry: {exc}") from exc


class _RestrictedDisk(Disk):  # type: ignore[misc]  # diskcache ships no type hints
    allowed: frozenset[tuple[str, str]] = frozenset()

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode != MODE_PICKLE:
            return super().fetch(mode, filename, value, read)
        if value is not None:
            return _restricted_load(io.BytesIO(value), self.allowed)
        with open(os.path.join(self._directory, filename or ""), "rb") as file:
            return _restricted_load(file, self.allowed)


def allowed_pairs(safe_types: Iterable[type[Any]]) -> frozenset[tuple[str, str]]:
    """The ``(module, qualname)`` pairs of ``safe_types``; TypeError for an entry that is not a type."""
    found = list(safe_types)
    for entry in found:
        if not isinstance(entry, type):
            raise TypeError(f"safe_types entries must be types, got {entry!r}")
    return frozenset((cls.__module__, cls.__qualname__) for cls in found)


def restricted_disk(allowed: frozenset[tuple[str, str]]) -> type[Disk]:
    """A diskcache ``Disk`` class that unpickles only the built-in allowlist plus ``allowed``
    (``(module, qualname)`` pairs, see :func:`allowed_pairs`); diskcache instantiates the class
    itself, so the allowlist rides on a subclass."""
    return type("RestrictedDisk", (_RestrictedDisk,), {"allowed": frozenset(allowed)})


class DiskWriter:
    """One daemon thread that writes ``(key, value)`` pairs to a diskcache, in order."""

    def __init__(self, disk: Any, name: str) -> None:
        self._disk = disk
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread: threading.Thread | None = None

    def put(self, key: str, value: Any) -> None:
        """Queue a write; it happens shortly after on the writer thread."""
        if self._thread is None:
            self._start()
        self._queue.put((key, value))

    def flush(self) -> None:
        """Block until every write queued so far is done."""
        if self._thread is not None:
            self._queue.join()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            key, value = self._queue.get()
            try:
                self._disk.set(key, value)
            except Exception as exc:  # a cache that cannot write must not fail LM calls: say so, go on
                logger.warning("LM cache write to %s failed: %s", self._name, exc)
            finally:
                self._queue.task_done()
