"""One pooled HTTP client per running event loop, shared by every LM in that loop.

Why this transport: on this machine one ``httpx.AsyncClient`` with its own pool (httpcore) did 87
calls/s against a 100 ms server at 64 connections, against ~1,900/s at 256 in flight over
``httpx_aiohttp``'s transport (bare aiohttp ~2,100/s); bench/http_transport.py measures it again. So
we keep httpx's API (requests, responses, timeouts, its exceptions) over aiohttp's connection pool,
with a connection limit high enough for 1,000+ calls in flight.

Why one client per loop: an aiohttp session belongs to the loop that created it. Clients are keyed
weakly by loop, so a closed, dropped loop takes its entry with it. The client is closed when
``asyncio.run`` (or any runner calling ``loop.shutdown_asyncgens()``) finishes, by a small parked async
generator whose ``finally`` closes it, or earlier by :func:`aclose_client`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["MAX_CONNECTIONS", "LoopResources", "aclose_client", "get_client", "loop_resources"]

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 4096
"""Connections per loop; above the 1,000+ in flight a worker runs, below a typical fd limit."""

_KEEPALIVE_S = 30.0


@dataclass
class LoopResources:
    """What one event loop owns: its HTTP client and per-endpoint state (e.g. limiters)."""

    client: httpx.AsyncClient
    closer: AsyncGenerator[None, None]
    per_endpoint: dict[str, Any] = field(default_factory=dict)


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopResources] = weakref.WeakKeyDictionary()


def _new_client() -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS,
        max_keepalive_connections=MAX_CONNECTIONS,
        keepalive_expiry=_KEEPALIVE_S,
    )
    # trust_env=False: proxies and .netrc come from explicit settings only, never from the environment
    return httpx.AsyncClient(transport=AiohttpTransport(limits=limits, trust_env=False), trust_env=False)


async def _close_at_loop_shutdown(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.aclose()


async def loop_resources() -> LoopResources:
    """The running loop's resources, created on first use."""
    loop = asyncio.get_running_loop()
    resources = _by_loop.get(loop)
    if resources is None or resources.client.is_closed:
        client = _new_client()
        closer = _close_at_loop_shutdown(client)
        await closer.__anext__()  # parked at its yield; shutdown_asyncgens() will finish it
        resources = _by_loop[loop] = LoopResources(client=client, closer=closer)
        logger.debug("opened an HTTP client for loop %#x", id(loop))
    return resources


async def get_client() -> httpx.AsyncClient:
    """The running loop's shared HTTP client."""
    return (await loop_resources()).client


async def aclose_client() -> None:
    """Close the running loop's shared client now; the next call opens a new one."""
    resources = _by_loop.pop(asyncio.get_running_loop(), None)
    if resources is not None:
        await resources.closer.aclose()
