"""The aggregator's local state folders: one per running aggregator, removed once nobody owns it.

Each aggregator gives faust its own folder under the data dir (``<data_dir>/<worker id>``; the worker
id, and so the folder, is new on every start unless ``--worker-id`` names it). Its tables live in
memory and in their changelog topics, so a folder outlives its process with nothing in it worth
keeping, and folders piled up under the data dir, one per start.

Ownership is a lock, not a guess: the aggregator holds an exclusive ``flock`` on ``owner.lock`` in
its folder for its whole life (the kernel releases it when the process ends, kill -9 included, and a
lock on a bind-mounted volume is seen by every container on the host). At start-up, after taking
its own folder, it removes every other folder of the data dir whose ``owner.lock`` it can lock: no
live process holds it. The lock file gets its final name only once it is locked (written under a
temporary name, then renamed), so a starting aggregator's folder is never seen unlocked.

Folders without ``owner.lock`` (from aggregators before this scheme, or not ours at all) are left
alone: nothing proves that no live process uses them. They are counted in a log line; remove them
by hand when no older aggregator runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from dspex.errors import ConfigurationError

__all__ = ["LOCK_NAME", "StateFolder", "claim_state_folder", "remove_stale_folders"]

logger = logging.getLogger(__name__)

LOCK_NAME = "owner.lock"
_KIND = "aggregate"  # written in the lock file: only folders of this kind are removed


@dataclass
class StateFolder:
    """A state folder this process owns while ``fd`` (its locked ``owner.lock``) stays open."""

    path: Path
    fd: int

    def release(self) -> None:
        """Give the folder up (it is then stale: the next aggregator to start removes it)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def claim_state_folder(data_dir: Path, worker_id: str) -> StateFolder:
    """Create (or reuse) ``data_dir/worker_id`` and lock it for this process's life.

    ConfigurationError when a live process already holds it (two aggregators given the same
    ``--worker-id`` and data dir).
    """
    folder = data_dir / worker_id
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    if lock.exists():
        fd = _try_lock(lock)
        if fd is None:
            raise ConfigurationError(
                f"another running aggregator owns {folder}: give this one another --worker-id or --data-dir"
            )
        _write_owner(fd)
        return StateFolder(folder, fd)
    staged = folder / f".{LOCK_NAME}.{secrets.token_hex(4)}"
    fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
    _write_owner(fd)
    os.replace(staged, lock)  # the same inode: visible under its name already locked
    return StateFolder(folder, fd)


def remove_stale_folders(data_dir: Path, keep: Path) -> list[Path]:
    """Remove the folders of ``data_dir`` (``keep`` aside) whose ``owner.lock`` no live process
    holds; the removed folders. Never raises: a folder that cannot be removed stays."""
    removed: list[Path] = []
    unowned = 0
    for folder in sorted(_children(data_dir)):
        if folder == keep:
            continue
        lock = folder / LOCK_NAME
        if not lock.is_file():
            unowned += not folder.name.startswith(".")
            continue
        if _remove_if_stale(folder, lock):
            removed.append(folder)
    if removed:
        logger.info("removed %d stale aggregator state folder(s) under %s", len(removed), data_dir)
    if unowned:
        logger.info(
            "%d folder(s) under %s have no %s (older aggregators?): left alone, remove them by hand "
            "when no aggregator from before runs",
            unowned, data_dir, LOCK_NAME,
        )  # fmt: skip
    return removed


def _remove_if_stale(folder: Path, lock: Path) -> bool:
    fd = _try_lock(lock)
    if fd is None:
        return False  # a live aggregator holds it
    try:
        if _read_kind(fd) != _KIND:
            return False
        # Renamed first (while locked), so that nobody starts on a half-removed folder.
        doomed = folder.with_name(f".removing-{folder.name}-{secrets.token_hex(4)}")
        os.replace(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        return True
    except OSError as exc:
        logger.warning("could not remove stale state folder %s: %s", folder, exc)
        return False
    finally:
        os.close(fd)


def _children(data_dir: Path) -> list[Path]:
    try:
        return [path for path in data_dir.iterdir() if path.is_dir() and not path.is_symlink()]
    except OSError:
        return []


def _try_lock(lock: Path) -> int | None:
    """An open, exclusively locked descriptor of ``lock``; None when another process holds it."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _write_owner(fd: int) -> None:
    # For people looking at the folder; ownership itself is the lock.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{_KIND} pid={os.getpid()}\n".encode(), 0)


def _read_kind(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode("utf-8", "replace").split(" ", 1)[0].strip()
    except OSError:
        return ""
