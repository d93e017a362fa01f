"""Process, port and file helpers of the dev broker (POSIX: pids, /proc, flock)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from dspex.errors import DevBrokerError

__all__ = [
    "HOST",
    "file_lock",
    "free_port",
    "is_kafka_process",
    "new_cluster_id",
    "pid_alive",
    "port_free",
    "require_tool",
    "tail",
]

HOST = "127.0.0.1"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_kafka_process(pid: int) -> bool:
    """Whether ``pid`` is a live Kafka broker (guards against a recycled pid in a stale pid file)."""
    if not pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc").is_dir():
        return True  # no /proc to look into: trust the pid file
    try:
        return b"kafka.Kafka" in cmdline.read_bytes()  # a zombie's cmdline is empty
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Java's server sockets use SO_REUSEADDR: mimic it so TIME_WAIT leftovers do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so that two processes never fetch or start the same thing at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise DevBrokerError(
            f"`{name}` was not found on PATH; the dev broker needs Java 17+ and Maven "
            "(e.g. `apt-get install openjdk-17-jre-headless maven`), or point DSPEX_KAFKA_BOOTSTRAP "
            "at a broker you already have"
        )
    return found


def new_cluster_id() -> str:
    """16 random bytes in URL-safe base64 without padding, as Kafka makes them.

    Like Kafka's own ``Uuid.randomUuid``, an id starting with "-" is drawn again: the storage
    tool's argument parser would take it for an option.
    """
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not candidate.startswith("-"):
            return candidate
