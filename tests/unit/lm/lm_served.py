"""A real OpenAI-compatible HTTP server on a free port, for the LM tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestServer

from dspex.lm.transport import aclose_client


@asynccontextmanager
async def served_v1(app: web.Application) -> AsyncIterator[str]:
    """``app`` served until the block ends; yields its ``/v1`` base URL. The LM client's pooled
    connections are closed before the server, so no socket outlives the test."""
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("/v1"))
    finally:
        await aclose_client()
        await server.close()
