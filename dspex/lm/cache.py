"""The response cache: DSPy's ``Cache`` (memory LRU + disk), ``dspex.cache``, ``configure_cache``.

    dspex.cache.reset_memory_cache()                      # the process's cache, as dspy.cache
    dspex.configure_cache(enable_memory_cache=False)      # a new one, used from the next LM call on
    cache = Cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir="/tmp/c")

One cache for everything: an :class:`~dspex.LM` made without ``cache_dir`` reads and writes
``dspex.cache`` at each call (so replacing it or resetting its memory changes what the next call
sees), ``request_cache`` functions and the :class:`~dspex.Embedder` use it too. An LM given its own
``cache_dir`` (a worker's ``--lm-cache-dir``) gets the process's one :class:`Cache` for that directory.

Tiers, in order: memory (a ``cachetools`` LRU) then disk (a ``diskcache`` ``FanoutCache``: SQLite in
WAL mode, 16 shards, safe for several processes on one directory). A value found on disk is copied
into memory. The general API (:meth:`Cache.get` / :meth:`Cache.put`) keys a request dict by the
SHA-256 of its canonical JSON and pickles values; ``restrict_pickle=True`` reads back only allowed
types (:mod:`dspex.lm.cache_disk`), and an entry that cannot be read is deleted and is a miss.

LM responses take a lighter path: the key is :func:`cache_key` over the API base and the JSON body
(no header, so no API key; not the timeout or retry policy), the value is the response JSON (stored
as text, never pickled), a memory hit is returned as is (callers do not mutate responses), and disk
writes go to a background thread so an LM call never waits on another process's write lock
(:meth:`Cache.flush`, run at exit and by ``LM.aclose``, waits for them).
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import os
import sys
import threading
import weakref
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from dspex.errors import ConfigurationError
from dspex.ids import canonical_json, content_id
from dspex.lm.cache_keys import request_key
from dspex.lm.request_cache import request_cache

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_SIZE_LIMIT",
    "Cache",
    "cache_for",
    "cache_key",
    "configure_cache",
    "global_cache",
    "request_cache",
]

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/dspex/lm")
_DSPY_SIZE_LIMIT = 30_000_000_000


def _size_limit_from_env() -> int:
    # DSPy's default for its process cache; DSPY_CACHE_LIMIT overrides it there and here. Read at
    # import, so a bad value is a warning rather than an import error.
    text = os.environ.get("DSPY_CACHE_LIMIT")
    if text is None:
        return _DSPY_SIZE_LIMIT
    try:
        return int(float(text))
    except ValueError:
        logger.warning(
            "DSPY_CACHE_LIMIT=%r is not a number of bytes: the cache keeps %s", text, _DSPY_SIZE_LIMIT
        )
        return _DSPY_SIZE_LIMIT


DEFAULT_SIZE_LIMIT = _size_limit_from_env()
DEFAULT_MEMORY_ENTRIES = 1_000_000
# An LM's own cache_dir is mostly a long-running worker's (--lm-cache-dir): a smaller memory tier.
DIRECTORY_MEMORY_ENTRIES = 10_000


def cache_key(api_base: str, body: Mapping[str, Any]) -> str:
    """The cache key of an LM request: its API base and JSON body; no header, no key (see module doc)."""
    return content_id({"api_base": api_base, "request": dict(body)})


def default_cache_dir() -> Path:
    """``DSPEX_CACHEDIR``, else DSPy's ``DSPY_CACHEDIR``, else ``~/.cache/dspex/lm``."""
    chosen = os.environ.get("DSPEX_CACHEDIR") or os.environ.get("DSPY_CACHEDIR")
    return Path(chosen) if chosen else DEFAULT_CACHE_DIR.expanduser()


class Cache:
    """DSPy's two-tier cache: an in-memory LRU in front of an on-disk ``FanoutCache``.

    ``memory_max_entries`` must be positive (``math.inf``: unbounded). With ``restrict_pickle`` the
    disk tier unpickles only plain data, numpy arrays, litellm/openai response models and
    ``safe_types``. A disabled tier is an empty dict.
    """

    def __init__(
        self,
        enable_disk_cache: bool,
        enable_memory_cache: bool,
        disk_cache_dir: str | os.PathLike[str] | None,
        disk_size_limit_bytes: int | None = 1024 * 1024 * 10,
        memory_max_entries: float | None = DEFAULT_MEMORY_ENTRIES,
        restrict_pickle: bool = False,
        safe_types: Sequence[type[Any]] | None = None,
    ) -> None:
        self.enable_disk_cache = bool(enable_disk_cache)
        self.enable_memory_cache = bool(enable_memory_cache)
        self.disk_cache_dir = os.fspath(disk_cache_dir) if disk_cache_dir is not None else None
        self.restrict_pickle = restrict_pickle
        self._lock = threading.RLock()
        self.memory_cache: MutableMapping[str, Any] = {}
        self.disk_cache: Any = {}
        if self.enable_memory_cache:
            self.memory_cache = _memory_tier(memory_max_entries)
        if self.enable_disk_cache:
            self.disk_cache = _disk_tier(
                self.disk_cache_dir, disk_size_limit_bytes, restrict_pickle, safe_types
            )
        self._writer: Any = None  # a DiskWriter, made on the first LM write

    def __repr__(self) -> str:
        tiers = [
            name
            for name, on in (("memory", self.enable_memory_cache), ("disk", self.enable_disk_cache))
            if on
        ]
        where = f", dir={self.disk_cache_dir!r}" if self.enable_disk_cache else ""
        return f"Cache({'+'.join(tiers) or 'off'}{where})"

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` (a :meth:`cache_key`) is stored in either tier."""
        return key in self.memory_cache or key in self.disk_cache

    @property
    def enabled(self) -> bool:
        """Whether any tier is on (a cache with both off stores and finds nothing)."""
        return self.enable_memory_cache or self.enable_disk_cache

    def cache_key(
        self, request: Mapping[str, Any], ignored_args_for_cache_key: Sequence[str] | None = None
    ) -> str:
        """The SHA-256 (64 hex digits) of ``request``'s canonical JSON, without the ignored keys;
        pydantic models and classes, and callables, are turned into JSON first. Raises TypeError
        for a value that has no JSON form."""
        return request_key(request, ignored_args_for_cache_key or ())

    def get(self, request: Mapping[str, Any], ignored_args_for_cache_key: Sequence[str] | None = None) -> Any:
        """The stored value for ``request`` (a copy marked as a cache hit), or None."""
        if not self.enabled:
            return None
        try:
            key = self.cache_key(request, ignored_args_for_cache_key)
        except Exception:
            logger.debug("no cache key for a request with an unserializable value; a miss")
            return None
        found = self._find(key)
        return None if found is None else self._prepare_cached_response(found)

    def put(
        self,
        request: Mapping[str, Any],
        value: Any,
        ignored_args_for_cache_key: Sequence[str] | None = None,
        enable_memory_cache: bool = True,
    ) -> None:
        """Store ``value`` for ``request`` in memory (unless this call says not to) and on disk."""
        to_memory = self.enable_memory_cache and enable_memory_cache
        if not (to_memory or self.enable_disk_cache):
            return
        try:
            key = self.cache_key(request, ignored_args_for_cache_key)
        except Exception:
            logger.debug("no cache key for a request with an unserializable value; not stored")
            return
        if to_memory:
            with self._lock:
                self.memory_cache[key] = value
        if self.enable_disk_cache:
            try:
                self.disk_cache.set(key, value)
            except Exception as exc:  # e.g. a value pickle cannot carry: memory still has it
                logger.debug("disk cache could not store a %s: %s", type(value).__name__, exc)

    def reset_memory_cache(self) -> None:
        """Empty the memory tier (the disk tier keeps everything)."""
        if self.enable_memory_cache:
            with self._lock:
                self.memory_cache.clear()

    clear_memory = reset_memory_cache

    def save_memory_cache(self, filepath: str | os.PathLike[str]) -> None:
        """Write the memory tier to ``filepath`` (a pickle: load it only where you trust it)."""
        if not self.enable_memory_cache:
            return
        import cloudpickle  # only here: most processes never save their memory tier

        with self._lock, open(filepath, "wb") as file:
            cloudpickle.dump(self.memory_cache, file)

    def load_memory_cache(self, filepath: str | os.PathLike[str], allow_pickle: bool = False) -> None:
        """Replace the memory tier with a file from :meth:`save_memory_cache`. Unpickling can run
        code, so this needs ``allow_pickle=True``, for files from a trusted source only."""
        if not allow_pickle:
            raise ConfigurationError(
                "load_memory_cache reads a pickle, which can run arbitrary code: pass allow_pickle=True "
                "only for a file from a trusted source"
            )
        if not self.enable_memory_cache:
            return
        import cloudpickle

        with self._lock, open(filepath, "rb") as file:
            self.memory_cache = cloudpickle.load(file)

    # -- LM responses (see the module doc) ---------------------------------------------------

    def lm_get(self, key: str) -> dict[str, Any] | None:
        """The stored LM response for ``key`` (a :func:`cache_key`), or None; not copied."""
        if self.enable_memory_cache:
            with self._lock:
                value = self.memory_cache.get(key)
            if value is not None:
                return value  # type: ignore[no-any-return]
        if not self.enable_disk_cache:
            return None
        text = self._read_disk(key)
        if not isinstance(text, str):
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:  # a damaged entry is a miss; the fresh answer replaces it
            logger.debug("disk cache entry %s is not JSON; a miss", key)
            return None
        if self.enable_memory_cache:
            with self._lock:
                self.memory_cache[key] = value
        return value  # type: ignore[no-any-return]

    def lm_put(self, key: str, value: dict[str, Any]) -> None:
        """Store an LM response: in memory now, on disk by the writer thread shortly after."""
        if self.enable_memory_cache:
            with self._lock:
                self.memory_cache[key] = value
        if self.enable_disk_cache:
            self._disk_writer().put(key, canonical_json(value))

    def flush(self) -> None:
        """Block until every LM response put so far is on disk."""
        if self._writer is not None:
            self._writer.flush()

    # -- internals ---------------------------------------------------------------------------

    def _find(self, key: str) -> Any:
        if self.enable_memory_cache:
            with self._lock:
                found = self.memory_cache.get(key)
            if found is not None:
                return found
        if not self.enable_disk_cache:
            return None
        found = self._read_disk(key)
        if found is not None and self.enable_memory_cache:
            with self._lock:
                self.memory_cache[key] = found
        return found

    def _read_disk(self, key: str) -> Any:
        try:
            return self.disk_cache.get(key)
        except Exception as exc:  # an entry that does not unpickle (restricted, corrupt): drop it
            logger.debug("disk cache entry %s unreadable, deleted: %s", key, exc)
            try:
                self.disk_cache.delete(key)
            except Exception as delete_exc:
                logger.debug("could not delete disk cache entry %s: %s", key, delete_exc)
            return None

    def _prepare_cached_response(self, response: Any) -> Any:
        """A copy of a stored value; one with ``usage`` gets empty usage (no LM call was made) and
        ``cache_hit=True``, set past pydantic's checks so strict models take it too."""
        response = copy.deepcopy(response)
        if hasattr(response, "usage"):
            response.usage = {}
            object.__setattr__(response, "cache_hit", True)
        return response

    def _disk_writer(self) -> Any:
        if self._writer is None:
            from dspex.lm.cache_disk import DiskWriter

            with self._lock:
                if self._writer is None:
                    self._writer = DiskWriter(self.disk_cache, f"dspex-lm-cache:{self.disk_cache_dir}")
                    _with_writers.add(self)
        return self._writer


def _memory_tier(max_entries: float | None) -> MutableMapping[str, Any]:
    from cachetools import LRUCache

    if max_entries is None:
        raise ConfigurationError(
            "`memory_max_entries` cannot be None. Use `math.inf` if you need an unbounded cache."
        )
    if max_entries <= 0:
        raise ConfigurationError(
            f"`memory_max_entries` must be a positive number, but received {max_entries}"
        )
    return LRUCache(maxsize=max_entries)


def _disk_tier(
    directory: str | None, size_limit: int | None, restrict: bool, safe_types: Sequence[type[Any]] | None
) -> Any:
    from diskcache import FanoutCache

    from dspex.lm.cache_disk import allowed_pairs, restricted_disk

    options: dict[str, Any] = {"directory": directory, "shards": 16, "timeout": 10}
    if size_limit is not None:
        options["size_limit"] = size_limit
    if restrict:
        options["disk"] = restricted_disk(allowed_pairs(safe_types or []))
    return FanoutCache(**options)


# -- the process's caches ----------------------------------------------------------------------

_with_writers: weakref.WeakSet[Cache] = weakref.WeakSet()
_global_lock = threading.Lock()
_by_directory: dict[Path, Cache] = {}


def _get_dspy_cache() -> Cache:
    """The default process cache: both tiers in :func:`default_cache_dir`; memory only when the
    directory cannot be used (a read-only file system, say)."""
    directory = default_cache_dir()
    try:
        return Cache(True, True, directory, DEFAULT_SIZE_LIMIT, DEFAULT_MEMORY_ENTRIES)
    except Exception as exc:
        logger.warning("disk cache at %s unusable, using a memory-only cache: %s", directory, exc)
        return Cache(False, True, directory, DEFAULT_SIZE_LIMIT, DEFAULT_MEMORY_ENTRIES)


def global_cache() -> Cache:
    """``dspex.cache``: what was set (by :func:`configure_cache` or by assignment), else the default."""
    package = sys.modules["dspex"]
    found = package.__dict__.get("cache")
    if found is None:
        with _global_lock:
            found = package.__dict__.get("cache")
            if found is None:
                found = _get_dspy_cache()
                setattr(package, "cache", found)  # noqa: B010  # the dspex package's attribute
    return found


def configure_cache(
    enable_disk_cache: bool | None = True,
    enable_memory_cache: bool | None = True,
    disk_cache_dir: str | os.PathLike[str] | None = None,
    disk_size_limit_bytes: int | None = DEFAULT_SIZE_LIMIT,
    memory_max_entries: float = DEFAULT_MEMORY_ENTRIES,
    restrict_pickle: bool = False,
    safe_types: Sequence[type[Any]] | None = None,
) -> None:
    """DSPy's ``configure_cache``: replace ``dspex.cache`` with a new :class:`Cache`. Every LM without
    a ``cache_dir`` of its own uses it from its next call. ``disk_cache_dir`` None: the default
    directory (:func:`default_cache_dir`)."""
    directory = disk_cache_dir if disk_cache_dir is not None else default_cache_dir()
    new = Cache(
        bool(enable_disk_cache),
        bool(enable_memory_cache),
        directory,
        disk_size_limit_bytes,
        memory_max_entries,
        restrict_pickle=restrict_pickle,
        safe_types=safe_types,
    )
    with _global_lock:
        setattr(sys.modules["dspex"], "cache", new)  # noqa: B010  # the dspex package's attribute


def cache_for(directory: str | Path | None = None) -> Cache | None:
    """The cache an LM uses: for ``directory``, the process's one :class:`Cache` there (both tiers,
    10,000 entries in memory); for None, ``dspex.cache``, or None when both its tiers are off."""
    if directory is None:
        found = global_cache()
        return found if found.enabled else None
    resolved = Path(directory).expanduser().resolve()
    with _global_lock:
        cache = _by_directory.get(resolved)
        if cache is None:
            try:
                cache = Cache(True, True, resolved, DEFAULT_SIZE_LIMIT, DIRECTORY_MEMORY_ENTRIES)
            except Exception as exc:
                raise ConfigurationError(
                    f"cannot open the LM cache at {resolved} ({exc}); "
                    "pass LM(cache_dir=...) or LM(cache=False)"
                ) from exc
            _by_directory[resolved] = cache
        return cache


def __getattr__(name: str) -> Any:
    # `dspex.cache` resolves here (dspex/__init__.py's lazy exports), built on first use.
    if name == "cache":
        return global_cache()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@atexit.register
def _flush_all() -> None:
    for cache in list(_with_writers):
        cache.flush()
