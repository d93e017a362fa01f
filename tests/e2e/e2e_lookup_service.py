"""The lookup service the agent tests' ``lookup`` tool calls: a small HTTP server of the test.

It answers ``GET /?q=...`` with a text that depends only on the query, counts the connections it
accepted (with their times), and can be stopped and started again on the same port: while stopped
nothing listens there, so callers get "connection refused".
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import socket
from typing import Any

__all__ = ["LookupService", "answer_for"]


def answer_for(query: str) -> str:
    """What the service answers to ``query``."""
    return f"{zlib.crc32(query.encode('utf-8')) % 97} documents mention {query!r}"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("q", [""])[0]
        body = answer_for(query).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: thousands of requests


class _CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # socketserver's 5 drops SYNs when 64 local calls connect at once

    def __init__(self, address: tuple[str, int], accepted: list[float]) -> None:
        self.accepted = accepted
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket, Any]:
        request = super().get_request()
        self.accepted.append(time.time())
        return request


class LookupService:
    """``start()``, ``stop()`` (the port refuses connections), ``start()`` again on the same port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, 0
        self.accepted: list[float] = []  # unix times of the accepted connections
        self._server: _CountingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> LookupService:
        self._server = _CountingServer((self.host, self.port), self.accepted)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="lookup-service", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()  # the listening socket closes: connections are refused from now on
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def accepted_between(self, start: float, end: float) -> int:
        return sum(start <= t < end for t in self.accepted)
