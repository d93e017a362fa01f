"""A loopback TCP listener that counts the connections it accepts.

Sandbox tests point code that must have no network at it: a count above 0 means a connection left
the sandbox. It accepts and closes, never answers. With ``hold=True`` it keeps every connection
open instead, still never answering: a black hole (tracing tests and benchmarks point an OTLP
exporter at ``listener.url``: the export is sent and waits for its timeout).

    with LoopbackListener() as listener:
        ...  # code told to connect to 127.0.0.1:listener.port
        assert listener.connections == 0
"""

from __future__ import annotations

import socket
import threading

__all__ = ["LoopbackListener"]


class LoopbackListener:
    """A TCP listener on 127.0.0.1 (a free port) counting accepted connections in a thread;
    ``hold``: keep them open (never answered) until :meth:`close` rather than close each at once."""

    def __init__(self, *, hold: bool = False) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)  # the accept loop looks at the stop flag this often
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._hold = hold
        self._held: list[socket.socket] = []
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
            if self._hold:
                self._held.append(conn)
            else:
                conn.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        for conn in self._held:
            conn.close()

    def __enter__(self) -> LoopbackListener:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
