"""Who this process is: the default worker id, unique even where hostname and pid repeat.

``<host>-<pid>`` alone is not unique: every replica of a compose service has the service's fixed
hostname and runs as pid 1 in its own PID namespace, and so do pods of one Deployment that set a
hostname. Heartbeats, target files and consumer-group member names keyed on such an id overwrite
each other. The id therefore ends in a short random token drawn once per process (re-drawn after
a fork): 6 hex digits, 16.7 million values, so that replicas of one service practically never
collide (three replicas: about 1 in 5.6 million), while the host and pid in front keep it readable
in ``dspex status`` and logs. A restarted process gets a new id, as a new pid gave it before.

A container id (from /proc/self/cgroup or /proc/self/mountinfo) was not used: cgroup v2 shows
``0::/`` inside a container, mountinfo's layout differs between Docker, containerd and Podman,
and a process in a bare PID namespace (``unshare --pid``) has none.

    >>> process_id().count("-") >= 2
    True
"""

from __future__ import annotations

import os
import secrets
import socket

__all__ = ["process_id"]

_token: tuple[int, str] | None = None  # (pid it was drawn in, token)


def process_id() -> str:
    """``<host>-<pid>-<token>``: the same for every call in one process, new in a forked child."""
    global _token
    pid = os.getpid()
    if _token is None or _token[0] != pid:
        _token = (pid, secrets.token_hex(3))
    return f"{socket.gethostname()}-{pid}-{_token[1]}"
