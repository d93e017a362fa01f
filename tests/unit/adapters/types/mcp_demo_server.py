"""An MCP server of the tests (the ``mcp`` package's own ``MCPServer``): a sync, an async and a failing
tool, plus one answering with several text parts and one with an image part.

Built by :func:`build_server` inside a test: ``MCPServer`` configures logging through
``logging.basicConfig``, so the root logger's handlers and level are put back afterwards.
"""

from __future__ import annotations

import base64
import logging
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from pydantic import BaseModel, Field

__all__ = ["PIXEL", "build_server"]

PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)


class Place(BaseModel):
    """Where to look."""

    city: str
    radius_km: int = 5


def add(a: int, b: int = 2) -> int:
    """Add two integers and return the sum."""
    return a + b


async def lookup(
    query: Annotated[str, Field(description="What to look for")], where: Place | None = None
) -> str:
    """Look a query up (a coroutine on the server)."""
    return f"found {query}" + (f" in {where.city}" if where else "")


def broken(query: str) -> str:
    """A tool whose service is down."""
    raise ToolError(f"the lookup service is down (query {query!r})")


def parts(count: int) -> list[str]:
    """Answer with several text parts."""
    return [f"part {n}" for n in range(count)]


def picture() -> Image:
    """Answer with an image and no text."""
    return Image(data=PIXEL, format="png")


def build_server() -> MCPServer:
    """A fresh server with the five tools (the root logger left as it was)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        server = MCPServer("dspex-tests", log_level="WARNING")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    for tool in (add, lookup, broken, parts, picture):
        server.add_tool(tool)
    return server
