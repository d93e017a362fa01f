"""DSPy's ``dspy.utils.mcp``: MCP (Model Context Protocol) tools as :class:`dspex.Tool` objects.

Needs the ``mcp`` package (``pip install 'dspex[mcp]'``) only to open a client session; converting and
calling go through the session you pass.

    import mcp
    from dspex.utils.mcp import convert_mcp_tool, mcp_tools

    async with mcp.Client("http://127.0.0.1:8000/mcp") as client:
        tools = [convert_mcp_tool(client, tool) for tool in (await client.list_tools()).tools]
        agent = dspex.ReActV2("question -> answer", tools=tools)
        pred = await agent.acall(question="...")

    # the same in one step (dspex's addition): connect, list every page, convert
    async with mcp_tools("http://127.0.0.1:8000/mcp") as tools:
        pred = await dspex.ReActV2("question -> answer", tools=tools).acall(question="...")

In pipeline workers, MCP servers are reached only over streamable HTTP and only at the addresses the
worker allows (``--allow-mcp-server``, :meth:`dspex.processors.security.SecurityPolicy.check_mcp_server`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from dspex.adapters.types.mcp_tools import (
    MCPToolClient,
    ResultMode,
    check_mcp_url,
    mcp_result_value,
    restrict_mcp_servers,
)
from dspex.adapters.types.tool import Tool, convert_input_schema_to_tool_args
from dspex.errors import ConfigurationError

__all__ = [
    "MCPToolClient",
    "ResultMode",
    "convert_input_schema_to_tool_args",
    "convert_mcp_tool",
    "convert_mcp_tool_result",
    "mcp_tools",
    "restrict_mcp_servers",
]


def convert_mcp_tool(session: MCPToolClient, tool: Any, *, result_mode: ResultMode = "text") -> Tool:
    """A :class:`dspex.Tool` calling MCP tool ``tool`` through ``session`` (:meth:`Tool.from_mcp_tool`)."""
    return Tool.from_mcp_tool(session, tool, result_mode=result_mode)


def convert_mcp_tool_result(call_tool_result: Any, result_mode: ResultMode = "text") -> Any:
    """The value an MCP ``CallToolResult`` gives the agent; ``RuntimeError`` for an error result."""
    return mcp_result_value(call_tool_result, result_mode)


@asynccontextmanager
async def mcp_tools(
    url: str, *, result_mode: ResultMode = "text", **client_options: Any
) -> AsyncIterator[list[Tool]]:
    """The tools of the streamable-HTTP MCP server at ``url``, usable until the block ends.

    Opens an ``mcp.Client(url, **client_options)``, lists every page of the server's tools and
    converts them (:meth:`Tool.from_mcp_tool`). In a worker the URL is checked against the worker's
    allow-list before anything is sent. An error inside the block comes out as itself, not wrapped in
    the one-member ``ExceptionGroup`` that the client's task group would make of it.
    """
    check_mcp_url(url)
    client_class = _mcp_client_class()
    try:
        async with client_class(url, **client_options) as client:
            listed = await _listed(client)
            yield [Tool.from_mcp_tool(client, tool, result_mode=result_mode) for tool in listed]
    except BaseExceptionGroup as group:
        raise _sole_error(group) from None


async def _listed(client: Any) -> list[Any]:
    tools: list[Any] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside (nested) single-member groups; the group itself when it holds several."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _mcp_client_class() -> Any:
    # the mcp package is an optional extra: imported when a connection is asked for, not with dspex
    try:
        from mcp import Client
    except ImportError as exc:
        raise ConfigurationError("MCP tools need the mcp package: pip install 'dspex[mcp]'") from exc
    return Client
