"""A loopback TCP listener that counts the connections it accepts.

Sandbox tests point code that must have no network at it: a count above 0 means a connection left
the sandbox. It accepts and closes, never answers.

    with LoopbackListener() as listener:
        ...  # code told to connect to 127.0.0.1:listener.port
        assert listener.connections == 0
"""

from __future__ import annotations

import socket
import threading

__all__ = ["LoopbackListener"]


class LoopbackListener:
    """A TCP listener on 127.0.0.1 (a free port) counting accepted connections in a thread."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)  # the accept loop looks at the stop flag this often
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the timeout, or the socket closed under us
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def __enter__(self) -> LoopbackListener:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
