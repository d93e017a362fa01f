"""One pooled HTTP session per running event loop, shared by every LM in that loop.

Why aiohttp, called directly: on this machine one ``httpx.AsyncClient`` with its own pool (httpcore)
did 87 calls/s against a 100 ms server at 64 connections, against ~2,000/s over aiohttp's pool;
httpx's request and response models on top of aiohttp (``httpx_aiohttp``) cost another ~200 µs of
CPU per call (bench/http_transport.py measures all of them). ``dspex.lm`` therefore sends with the
loop's :class:`aiohttp.ClientSession` (connection limit high enough for 1,000+ calls in flight) and
maps aiohttp's exceptions itself. :func:`get_client` gives an ``httpx.AsyncClient`` over the same
session for code that wants httpx's API.

The LM's own JSON calls (``LM._send``: chat, Responses, embeddings) skip even aiohttp's request
path: :func:`get_http1_pool` gives the loop's :class:`~dspex.lm.http1.Http1Pool`, a lean HTTP/1.1
client with the same TLS context, connection limit and keep-alive (aiohttp's request objects were
about a quarter of a predictor's CPU; see :mod:`dspex.lm.http1`). ``DSPEX_LM_HTTP_CLIENT=aiohttp``
sends those calls through the aiohttp session too, for a server the lean client cannot read.

Why one session per loop: an aiohttp session belongs to the loop that created it. Sessions are keyed
weakly by loop, so a closed, dropped loop takes its entry with it. The session is closed when
``asyncio.run`` (or any runner calling ``loop.shutdown_asyncgens()``) finishes, by a small parked
async generator whose ``finally`` closes it, or earlier by :func:`aclose_client`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from dspex.lm.http1 import Http1Pool

__all__ = [
    "MAX_CONNECTIONS",
    "LoopResources",
    "aclose_client",
    "get_client",
    "get_http1_pool",
    "get_session",
    "loop_resources",
    "opened_loop_resources",
]

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 4096
"""Connections per loop; above the 1,000+ in flight a worker runs, below a typical fd limit."""

_KEEPALIVE_S = 30.0


_CLIENT_ENV = "DSPEX_LM_HTTP_CLIENT"


@dataclass
class LoopResources:
    """What one event loop owns: its HTTP session (and an httpx client over it), and the lean
    client's pool for the LM's JSON calls (None when ``DSPEX_LM_HTTP_CLIENT=aiohttp``)."""

    session: aiohttp.ClientSession
    client: httpx.AsyncClient
    http1: Http1Pool | None
    closer: AsyncGenerator[None, None]

    @property
    def closed(self) -> bool:
        return self.session.closed or self.client.is_closed or (self.http1 is not None and self.http1.closed)


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopResources] = weakref.WeakKeyDictionary()
# The last loop asked about and its resources: every LM call asks, nearly always from the same loop,
# and a WeakKeyDictionary lookup builds a weak reference each time.
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], LoopResources] | None = None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # httpx's TLS context: certifi's CA bundle, the same on every machine and the one httpx-based
    # clients (DSPy's litellm among them) trust, rather than whatever the system store holds.
    # One per process: loading the bundle takes ~40 ms, and every new event loop (a sync call's, a
    # GEPA thread's) opens its own sessions; a context is safe to share between them.
    return httpx.create_ssl_context(trust_env=False)


def _new_http1_pool(tls: ssl.SSLContext) -> Http1Pool | None:
    if os.environ.get(_CLIENT_ENV, "").strip().lower() == "aiohttp":
        return None
    return Http1Pool(tls, limit=MAX_CONNECTIONS, keepalive_s=_KEEPALIVE_S)


def _new_session(tls: ssl.SSLContext) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=_KEEPALIVE_S, ssl=tls)
    # trust_env=False: proxies and .netrc come from explicit settings only, never from the environment
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=True)


def _httpx_over(session: aiohttp.ClientSession) -> httpx.AsyncClient:
    # Closing this client closes the session too (the transport owns what it was given).
    return httpx.AsyncClient(transport=AiohttpTransport(client=session), trust_env=False)


async def _close_at_loop_shutdown(
    client: httpx.AsyncClient, session: aiohttp.ClientSession, http1: Http1Pool | None
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if http1 is not None:
            http1.close()
            await asyncio.sleep(0)  # the transports finish closing in their next callbacks
        await client.aclose()
        await session.close()


def opened_loop_resources() -> LoopResources | None:
    """The running loop's resources when the last call on this loop opened them (None: ask
    :func:`loop_resources`). Not a coroutine: an LM call's hot path saves two."""
    last = _last
    if last is not None and last[0]() is asyncio.get_running_loop() and not last[1].session.closed:
        return last[1]
    return None


async def loop_resources() -> LoopResources:
    """The running loop's resources, created on first use."""
    global _last
    loop = asyncio.get_running_loop()
    last = _last
    if last is not None and last[0]() is loop and not last[1].session.closed:
        return last[1]
    resources = _by_loop.get(loop)
    if resources is None or resources.closed:
        tls = _tls_context()
        session = _new_session(tls)
        client = _httpx_over(session)
        http1 = _new_http1_pool(tls)
        closer = _close_at_loop_shutdown(client, session, http1)
        await closer.__anext__()  # parked at its yield; shutdown_asyncgens() will finish it
        resources = LoopResources(session=session, client=client, http1=http1, closer=closer)
        _by_loop[loop] = resources
        logger.debug("opened an HTTP session for loop %#x", id(loop))
    _last = (weakref.ref(loop), resources)
    return resources


async def get_session() -> aiohttp.ClientSession:
    """The running loop's shared aiohttp session (what ``dspex.lm`` sends with)."""
    return (await loop_resources()).session


async def get_http1_pool() -> Http1Pool | None:
    """The running loop's lean HTTP/1.1 pool for the LM's JSON calls, or None when
    ``DSPEX_LM_HTTP_CLIENT=aiohttp`` asks for the aiohttp session instead."""
    return (await loop_resources()).http1


async def get_client() -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over the running loop's shared session."""
    return (await loop_resources()).client


async def aclose_client() -> None:
    """Close the running loop's shared session (and client) now; the next call opens new ones."""
    global _last
    resources = _by_loop.pop(asyncio.get_running_loop(), None)
    _last = None
    if resources is not None:
        await resources.closer.aclose()
