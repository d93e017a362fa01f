"""A lean HTTP/1.1 client for the LM's JSON requests: one POST, one whole answer, pooled connections.

Why not aiohttp for these: a predictor makes one LM call per example, and aiohttp's request path
(session, request and response objects, cookie jar, timers, a writer task per request, the connector's
bookkeeping) was a quarter of a predictor's CPU; this client writes the request in one
``transport.write`` and parses the answer in ``data_received``, about a third of that cost
(bench/_predictor_cpu.py and the measurements in bench/RESULTS.md). It does only what an LM call needs:
POST with a body, keep-alive, ``Content-Length``, chunked and read-until-close answers, gzip and
deflate. The answers are parsed by llhttp (Node.js's HTTP parser) through ``httptools``, so the framing
rules (lengths, chunks, header syntax) are a well-kept parser's, not this module's. Streams (SSE), batch
files and anything else still go through aiohttp (:mod:`dspex.lm.transport`). Redirects are not followed
(neither does the LM's aiohttp call), and no proxy or ``.netrc`` applies (the aiohttp session trusts no
environment either).

Errors are :class:`ConnectionError` (an ``OSError``), which ``LM._send`` maps as it maps aiohttp's:
refused, reset, closed before the whole answer, or an answer that is not HTTP.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

from dspex import __version__

__all__ = ["HTTPProtocolError", "Http1Pool", "Http1Response", "ServerDisconnected", "Target", "target_of"]

_USER_AGENT = f"dspex/{__version__} Python/{sys.version_info[0]}.{sys.version_info[1]}"
_MAX_HEAD_BYTES = 64 * 1024  # a status line and headers longer than this are not an LM's answer
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ServerDisconnected(ConnectionError):
    """The server closed the connection before the whole answer arrived."""


class HTTPProtocolError(ConnectionError):
    """What came back is not an HTTP/1.x answer this client can read."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go, and the fixed start of every request's head."""

    key: tuple[str, str, int]  # (scheme, host, port): one pool of connections each
    head_start: bytes  # "POST <path> HTTP/1.1", Host, User-Agent, Accept-Encoding


def target_of(url: str) -> Target | None:
    """The target of ``url``, or None for what this client leaves to aiohttp (other schemes,
    credentials in the URL, a fragment)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or parts.username is not None or parts.fragment or not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:  # a port that is not a number: aiohttp's error message says so
        return None
    host_header = parts.netloc if parts.port not in (None, _DEFAULT_PORTS[scheme]) else parts.hostname
    if ":" in parts.hostname and parts.port in (None, _DEFAULT_PORTS[scheme]):
        host_header = f"[{parts.hostname}]"  # an IPv6 address keeps its brackets
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {_USER_AGENT}\r\n"
        "Accept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
    )
    return Target(key=(scheme, parts.hostname, port), head_start=head.encode("ascii"))


class Http1Response:
    """A whole answer: status, headers (case-insensitive), the decoded body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def charset(self) -> str | None:
        """The ``charset`` parameter of the Content-Type, if any."""
        for param in self.headers.get("Content-Type", "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset":
                return value.strip().strip('"') or None
        return None


def _decoded(body: bytes, encoding: str) -> bytes:
    if not body or encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":  # zlib-wrapped by the RFC, raw by some servers
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise HTTPProtocolError(f"cannot decode a {encoding} body: {exc}") from exc
    raise HTTPProtocolError(f"unsupported Content-Encoding {encoding!r}")


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request at a time, its answer parsed as the bytes
    arrive by llhttp (through httptools), which calls the ``on_*`` methods below."""

    def __init__(self, pool: Http1Pool, key: tuple[str, str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Http1Response] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reset_answer()

    def _reset_answer(self) -> None:
        self._status = 0
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._head_done = False
        self._head_bytes = 0
        self._interim = False  # a 1xx answer is being read: the real one follows it
        self._until_close = False  # no length and not chunked: the body ends with the connection
        self._body: list[bytes] = []

    # -- transport callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.reusable = False  # bytes nobody asked for: this connection's framing is lost
            self.close()
            return
        try:
            if not self._head_done:
                self._head_bytes += len(data)
                if self._head_bytes > _MAX_HEAD_BYTES:
                    raise HTTPProtocolError("the answer's head is too long")
            self._parser.feed_data(data)
        except (httptools.HttpParserError, HTTPProtocolError) as exc:
            self.reusable = False
            self._finish_with(exc if isinstance(exc, HTTPProtocolError) else _not_http(exc))
            self.close()

    def eof_received(self) -> bool | None:
        self.reusable = False
        if self._until_close:
            self._finish_with(self._answer())
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if exc is None and self._until_close:  # TLS reports a clean close here, not in eof_received
            self._finish_with(self._answer())
        self._finish_with(
            ServerDisconnected(f"server disconnected ({exc!r})" if exc else "server disconnected")
        )
        self._pool._lost(self)

    # -- parser callbacks (httptools) -----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            self.reusable = False  # a second answer to one request: do not trust what follows

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.add(name.decode("latin-1"), value.decode("latin-1").strip())

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints)
            self._interim = True
            return
        self._status, self._head_done = status, True
        if not self._parser.should_keep_alive():  # Connection: close, or HTTP/1.0 without keep-alive
            self.reusable = False
        headers = self._headers
        framed = "Content-Length" in headers or "chunked" in headers.get("Transfer-Encoding", "").lower()
        if not framed and status not in (204, 304):  # the body ends when the server closes
            self._until_close, self.reusable = True, False

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._reset_answer()
            return
        self._finish_with(self._answer())

    # -- requests -------------------------------------------------------------------------------

    async def request(self, data: bytes) -> Http1Response:
        assert self.transport is not None
        self._waiter = self._pool.loop.create_future()
        self.transport.write(data)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _finish_with(self, outcome: Http1Response | BaseException) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)

    def _answer(self) -> Http1Response | HTTPProtocolError:
        """The answer read so far (its body decoded), and the connection ready for the next one."""
        status, headers, body = self._status, self._headers, b"".join(self._body)
        self._reset_answer()
        encoding = headers.get("Content-Encoding", "").strip().lower()
        try:
            return Http1Response(status, headers, _decoded(body, encoding))
        except HTTPProtocolError as exc:
            return exc


def _not_http(exc: httptools.HttpParserError) -> HTTPProtocolError:
    return HTTPProtocolError(f"the answer is not HTTP/1.x this client can read: {exc}")


class Http1Pool:
    """One event loop's keep-alive connections, at most ``limit`` open at once."""

    def __init__(self, tls: ssl.SSLContext, *, limit: int, keepalive_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._tls = tls
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open = 0
        self._all: set[_Connection] = set()  # open or in use, for close()
        # requests waiting for a connection at the limit, with the server each waits for
        self._waiters: deque[tuple[tuple[str, str, int], asyncio.Future[_Connection | None]]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self.closed = False

    async def post(self, target: Target, headers: bytes, body: bytes) -> Http1Response:
        """POST ``body`` with ``headers`` (each line ending in CRLF, Content-Length added here)."""
        connection = await self._acquire(target.key)
        request = b"%b%bContent-Length: %d\r\n\r\n%b" % (target.head_start, headers, len(body), body)
        try:
            response = await connection.request(request)
        except BaseException:  # cancelled or failed mid-answer: the connection's state is unknown
            connection.close()
            raise
        self._release(connection)
        return response

    async def _acquire(self, key: tuple[str, str, int]) -> _Connection:
        if self.closed:
            raise ServerDisconnected("the HTTP pool is closed")
        idle = self._idle.get(key)
        now = self.loop.time()
        while idle:
            connection = idle.pop()
            if connection.reusable and now - connection.idle_since < self._keepalive_s:
                return connection
            connection.close()
        while self._open >= self._limit:
            self._close_an_idle_connection()  # its slot frees when its loss is reported
            handed = await self._wait_for_a_slot(key)
            if handed is not None:
                return handed
        return await self._connect(key)

    async def _wait_for_a_slot(self, key: tuple[str, str, int]) -> _Connection | None:
        """Wait until a connection to ``key`` is released (then it is handed over) or any
        connection is lost (None: a slot may be free)."""
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        entry = (key, waiter)
        self._waiters.append(entry)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over as this task was cancelled: give it back
                if handed is not None:
                    self._release(handed)
            raise
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        self._open += 1
        try:
            _, connection = await self.loop.create_connection(
                self._protocol_factory(key),
                host,
                port,
                ssl=self._tls if scheme == "https" else None,
                server_hostname=host if scheme == "https" else None,
            )
        except BaseException:
            self._open -= 1
            self._wake_a_waiter()
            raise
        if self.closed:  # closed while this one was connecting
            connection.close()
            raise ServerDisconnected("the HTTP pool is closed")
        self._all.add(connection)
        return connection

    def _protocol_factory(self, key: tuple[str, str, int]) -> Callable[[], _Connection]:
        return lambda: _Connection(self, key)

    def _release(self, connection: _Connection) -> None:
        if not connection.reusable or self.closed:
            connection.close()
            return
        if self._waiters and self._hand_over(connection):
            return
        connection.idle_since = self.loop.time()
        self._idle.setdefault(connection.key, []).append(connection)
        if self._waiters:  # someone waits for a connection elsewhere: free this one's slot
            self._close_an_idle_connection()
        if self._sweep is None:
            self._sweep = self.loop.call_later(self._keepalive_s, self._close_expired)

    def _lost(self, connection: _Connection) -> None:
        # An idle connection the server closed stays in its list until taken or swept: taking
        # skips it (not reusable), and finding it here would scan the list on every loss.
        self._open -= 1
        self._all.discard(connection)
        self._wake_a_waiter()

    def _hand_over(self, connection: _Connection) -> bool:
        """Give ``connection`` to the first request waiting for its server, if any."""
        for entry in self._waiters:
            key, waiter = entry
            if key == connection.key and not waiter.done():
                self._waiters.remove(entry)
                waiter.set_result(connection)
                return True
        return False

    def _wake_a_waiter(self) -> None:
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_an_idle_connection(self) -> None:
        for idle in self._idle.values():
            while idle:
                connection = idle.pop(0)  # the oldest
                if not connection.closed:
                    connection.close()
                    return

    def _close_expired(self) -> None:
        """Close connections idle for the keep-alive time (servers drop them about then)."""
        self._sweep = None
        deadline = self.loop.time() - self._keepalive_s
        for idle in self._idle.values():
            while idle and idle[0].idle_since <= deadline:
                idle.pop(0).close()
        if any(self._idle.values()):
            self._sweep = self.loop.call_later(self._keepalive_s, self._close_expired)

    def close(self) -> None:
        """Close every connection; requests in flight fail with :class:`ServerDisconnected`."""
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self._all):
            connection.close()
        self._idle.clear()
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ServerDisconnected("the HTTP pool is closed"))
        self._waiters.clear()
