"""The LM response cache: an in-memory LRU in front of a SQLite file shared by processes.

Key: ``content_id({"api_base": ..., "request": body})`` over the JSON body sent to the provider. Left
out, on purpose: every header (the API key travels in ``Authorization`` and never reaches the key or
the file), the timeout and the retry policy (they change how we wait, not what is answered). Two
requests differing in anything the provider sees (model, messages, temperature, ``seed``...) get
different keys. Only successful responses are stored; errors never are.

Disk layer: one SQLite file per directory (default ``~/.cache/dspex/lm``) in WAL mode, so readers never
wait for a writer, with a busy timeout so that processes writing at once queue instead of failing.
Reads run inline: a WAL point read by primary key takes tens of microseconds (measured in
tests/unit/lm/test_cache.py), cheaper than a hop to a thread. Writes go to one background thread per
file that commits them in batches, so the event loop never waits on another process's write lock; the
memory layer holds a new entry at once, and :meth:`ResponseCache.flush` (run at exit and by
``LM.aclose``) waits for the disk.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dspex.errors import ConfigurationError
from dspex.ids import canonical_json, content_id

__all__ = ["DEFAULT_CACHE_DIR", "ResponseCache", "cache_for", "cache_key", "configure_cache"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/dspex/lm")
_FILE_NAME = "responses.sqlite3"
_BUSY_TIMEOUT_S = 30.0
_BATCH = 256
_SCHEMA = "CREATE TABLE IF NOT EXISTS responses_v1 (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def cache_key(api_base: str, body: Mapping[str, Any]) -> str:
    """The cache key of a request: its API base and JSON body; no header, no key (see module doc)."""
    return content_id({"api_base": api_base, "request": dict(body)})


class _MemoryLRU:
    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        _set_up(conn)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigurationError(
            f"cannot open the LM cache at {path} ({exc}); pass LM(cache_dir=...) or LM(cache=False)"
        ) from exc
    return conn


def _set_up(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL takes an exclusive lock, and SQLite answers "locked" at once,
    # without its busy handler, when two processes race to do it: so retry here, within the timeout.
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            conn.execute(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class ResponseCache:
    """Memory LRU + SQLite file for successful LM responses (JSON objects), shared by processes."""

    def __init__(
        self, directory: Path, *, memory_entries: int = 10_000, disk: bool = True, memory: bool = True
    ) -> None:
        self.path = directory / _FILE_NAME
        self.disk = disk
        self.memory = memory
        self._memory = _MemoryLRU(memory_entries if memory else 0)
        self._open_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._writes: queue.Queue[tuple[str, str]] = queue.Queue()
        self._writer: threading.Thread | None = None

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response for ``key`` (memory first, then disk), or None."""
        value = self._memory.get(key) if self.memory else None
        if value is None and self.disk:
            value = self._read_disk(key)
            if value is not None and self.memory:
                self._memory.put(key, value)
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a response: in memory now, on disk by the writer thread shortly after."""
        if self.memory:
            self._memory.put(key, value)
        if self.disk:
            self._ensure_writer()
            self._writes.put((key, canonical_json(value)))

    def flush(self) -> None:
        """Block until every response put so far is committed to disk."""
        if self._writer is not None:
            self._writes.join()

    def clear_memory(self) -> None:
        """Forget the memory layer (the disk keeps everything)."""
        self._memory.clear()

    def _read_disk(self, key: str) -> dict[str, Any] | None:
        with self._read_lock:
            if self._reader is None:
                self._reader = _connect(self.path)
            try:
                row = self._reader.execute("SELECT value FROM responses_v1 WHERE key = ?", (key,)).fetchone()
            except sqlite3.OperationalError as exc:
                # e.g. locked past the busy timeout: a miss, not a failure
                logger.warning("LM cache read from %s failed, treating as a miss: %s", self.path, exc)
                return None
        return json.loads(row[0]) if row else None

    def _ensure_writer(self) -> None:
        with self._open_lock:
            if self._writer is None:
                conn = _connect(self.path)  # opened here so that a bad directory fails the caller
                self._writer = threading.Thread(
                    target=self._write_loop, args=(conn,), name=f"dspex-lm-cache:{self.path}", daemon=True
                )
                self._writer.start()

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        while True:
            batch = [self._writes.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit(conn, batch)
            finally:
                for _ in batch:
                    self._writes.task_done()

    def _commit(self, conn: sqlite3.Connection, batch: list[tuple[str, str]]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO responses_v1 (key, value) VALUES (?, ?)", batch)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # a cache that cannot write must not fail LM calls: say so, go on
            logger.warning("LM cache write of %s entries to %s failed: %s", len(batch), self.path, exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")


_caches: dict[tuple[Path, bool, bool], ResponseCache] = {}
_caches_lock = threading.Lock()


# What `configure_cache` set for LMs created afterwards without a cache_dir of their own.
_default_dir: Path = DEFAULT_CACHE_DIR
_default_layers: tuple[bool, bool, int] = (True, True, 10_000)  # disk, memory, memory entries


def configure_cache(
    enable_disk_cache: bool = True,
    enable_memory_cache: bool = True,
    disk_cache_dir: str | Path | None = None,
    disk_size_limit_bytes: int | None = None,
    memory_max_entries: int = 10_000,
) -> None:
    """DSPy's ``configure_cache``: the response cache of LMs created from now on without a ``cache_dir``.

    ``disk_size_limit_bytes`` is accepted and not enforced (the SQLite file grows; delete it to reset).
    """
    global _default_dir, _default_layers
    with _caches_lock:
        _default_dir = Path(disk_cache_dir) if disk_cache_dir is not None else DEFAULT_CACHE_DIR
        _default_layers = (enable_disk_cache, enable_memory_cache, memory_max_entries)


def cache_for(directory: str | Path | None = None) -> ResponseCache | None:
    """The process-wide cache of ``directory`` (default ``~/.cache/dspex/lm``, or what
    :func:`configure_cache` set), one per directory; None when ``configure_cache`` turned both layers off."""
    with _caches_lock:
        disk, memory, entries = _default_layers if directory is None else (True, True, 10_000)
        if not (disk or memory):
            return None
        resolved = Path(directory if directory is not None else _default_dir).expanduser().resolve()
        key = (resolved, disk, memory)
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = ResponseCache(resolved, memory_entries=entries, disk=disk, memory=memory)
        return cache


@atexit.register
def _flush_all() -> None:
    with _caches_lock:
        caches = list(_caches.values())
    for cache in caches:
        cache.flush()
