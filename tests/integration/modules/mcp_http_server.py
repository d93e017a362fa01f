"""An MCP server of the tests (the ``mcp`` package's ``MCPServer``) served over streamable HTTP on a
loopback port by uvicorn in a thread of the test process.

Its tools fit the simulated LM's scripted agent (:mod:`dspex.testing._tools`), which calls every tool
in its first turn and submits the operation tool's result: ``add`` (a sync function), ``lookup`` (a
coroutine), ``broken`` (raises) and ``minus`` (raises: the operation tool of a subtraction, which a
ReAct agent of the simulated LM calls). Every call is recorded in :attr:`MCPHTTPServer.calls`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

__all__ = ["MCPHTTPServer"]


class MCPHTTPServer:
    """``with MCPHTTPServer() as server:`` serves the tools at :attr:`url` until the block ends."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/mcp"
        config = uvicorn.Config(
            self._build().streamable_http_app(), log_level="warning", lifespan="on", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._socket],), daemon=True)

    def _build(self) -> MCPServer:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:  # MCPServer calls logging.basicConfig: leave the root logger as it was
            server = MCPServer("dspex-http-tests", log_level="WARNING")
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)

        def add(a: int, b: int) -> int:
            """Add two integers and return the sum."""
            self.calls.append(("add", {"a": a, "b": b}))
            return a + b

        async def lookup(query: str) -> str:
            """Look a query up in the encyclopedia."""
            self.calls.append(("lookup", {"query": query}))
            return f"nothing found for {query!r}"

        def broken(query: str) -> str:
            """Ask the archive, whose service is down."""
            self.calls.append(("broken", {"query": query}))
            raise ToolError("the archive service is down")

        def minus(a: int, b: int) -> int:
            """Subtract b from a."""
            self.calls.append(("minus", {"a": a, "b": b}))
            raise ToolError("the subtraction service is down")

        for tool in (add, lookup, broken, minus):
            server.add_tool(tool)
        return server

    def __enter__(self) -> MCPHTTPServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)
        self._socket.close()
