"""The parts of an MCP tool that need no ``mcp`` import: fields, calls, results and the worker restriction.

:meth:`dspex.Tool.from_mcp_tool` builds a tool from these. Nothing here imports the ``mcp`` package
(an optional extra): tools and results are read by their field names, which changed from camelCase
(``inputSchema``, ``isError``) in the SDK's 1.x to snake_case (``input_schema``, ``is_error``) in 2.x,
and text parts are told apart by their ``type`` of ``"text"``.

A call goes to the event loop the client session was opened on: the session's streams belong to that
loop. A sync call of an MCP tool (``tool(**kwargs)``, run on a loop of its own) or a program that a
sync ``program(...)`` runs on dspex's bridge loop therefore still reaches the session, as long as the
session's loop is running and not itself waiting for that very call.

A pipeline worker restricts MCP servers (:func:`restrict_mcp_servers`, installed by ``dspex worker``
from ``--allow-mcp-server``): then only a client connected to a URL (``mcp.Client(url)``, streamable
HTTP) whose URL the worker allows can back a tool, checked when the tool is built and on every call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, Protocol

from dspex._sync import is_blocked
from dspex.errors import ConfigurationError, SecurityPolicyError

__all__ = [
    "RESULT_MODES",
    "MCPToolClient",
    "ResultMode",
    "check_mcp_url",
    "mcp_caller",
    "mcp_field",
    "mcp_result_value",
    "mcp_server_url",
    "restrict_mcp_servers",
]

ResultMode = Literal["text", "structured"]
RESULT_MODES: Final[tuple[str, ...]] = ("text", "structured")

# Set once by a worker process at start-up, before any job runs; None: no restriction (local use).
_server_check: Callable[[str], None] | None = None


class MCPToolClient(Protocol):
    """What a tool needs of an MCP client: ``mcp.ClientSession`` and ``mcp.Client`` both have it."""

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Call the server's tool ``name`` with ``arguments``; an MCP ``CallToolResult``."""
        ...


def restrict_mcp_servers(check: Callable[[str], None] | None) -> None:
    """Make every MCP tool of this process pass ``check(url)`` (raises if the URL is not allowed).

    Called by ``dspex worker`` with its :class:`~dspex.processors.security.SecurityPolicy`'s
    ``check_mcp_server``; None lifts the restriction.
    """
    global _server_check
    _server_check = check


def mcp_server_url(session: Any) -> str | None:
    """The URL an MCP client was connected to (``mcp.Client(url)``); None when it does not say."""
    server = getattr(session, "server", None)
    return server if isinstance(server, str) else None


def check_mcp_url(url: str) -> None:
    """Raise SecurityPolicyError if this process is restricted and ``url`` is not allowed."""
    check = _server_check
    if check is not None:
        check(url)


def _check_server(session: Any) -> None:
    check = _server_check
    if check is None:
        return
    url = mcp_server_url(session)
    if url is None:
        raise SecurityPolicyError(
            "This worker uses MCP tools only through a client connected to a streamable-HTTP URL "
            "(mcp.Client('http://host:port/mcp')) that --allow-mcp-server allows; this client names "
            f"no URL ({type(session).__name__})"
        )
    check(url)


def mcp_field(obj: Any, snake_name: str, camel_name: str, default: Any = None) -> Any:
    """The value of a field by its 2.x (snake_case) or 1.x (camelCase) name, else ``default``."""
    for name in (snake_name, camel_name):
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def _field_was_set(obj: Any, snake_name: str, camel_name: str) -> bool:
    """Whether the server sent the field (a ``null`` included), not merely its default."""
    fields_set = getattr(obj, "model_fields_set", None)
    if fields_set is None:
        return hasattr(obj, snake_name) or hasattr(obj, camel_name)
    return snake_name in fields_set or camel_name in fields_set


def mcp_result_value(result: Any, result_mode: ResultMode = "text") -> Any:
    """What a tool call returns to the agent, from an MCP ``CallToolResult`` (DSPy 3.4.1's rules).

    One text part gives its string, several a list of strings; with no text part, the other parts
    (images, resources) as they came. ``"structured"`` returns the result's structured content when
    the server sent one. A result flagged as an error raises ``RuntimeError`` with its text, which
    an agent turns into an observation.
    """
    parts = list(getattr(result, "content", None) or ())
    texts = [part.text for part in parts if getattr(part, "type", None) == "text"]
    others = [part for part in parts if getattr(part, "type", None) != "text"]
    text: Any = texts[0] if len(texts) == 1 else texts
    if mcp_field(result, "is_error", "isError", default=False):
        raise RuntimeError(f"Failed to call a MCP tool: {text}")
    if result_mode == "structured" and _field_was_set(result, "structured_content", "structuredContent"):
        return mcp_field(result, "structured_content", "structuredContent")
    return text or others


def mcp_caller(session: MCPToolClient, name: str, result_mode: ResultMode) -> Callable[..., Awaitable[Any]]:
    """An async function calling the server's tool ``name`` through ``session`` with its keywords."""
    if result_mode not in RESULT_MODES:
        raise ConfigurationError(f"Unsupported MCP result mode: {result_mode!r}")
    _check_server(session)
    home = _running_loop()  # tools are usually converted right after the session was opened

    async def call(**arguments: Any) -> Any:
        _check_server(session)
        result = await _on_home_loop(home, session.call_tool(name, arguments=arguments))
        return mcp_result_value(result, result_mode)

    return call


async def _on_home_loop(home: asyncio.AbstractEventLoop | None, call: Awaitable[Any]) -> Any:
    """Await ``call`` on the session's loop: here if that is this loop, else by handing it over."""
    loop = asyncio.get_running_loop()
    if home is None or home is loop or home.is_closed() or not home.is_running():
        return await call
    if is_blocked(home):
        _close(call)
        raise ConfigurationError(
            "This MCP tool's client session lives on an event loop that is waiting for this very call "
            "(a sync program call made inside it); call the program with `await program.acall(...)`."
        )
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_await(call), home))


async def _await(call: Awaitable[Any]) -> Any:
    return await call


def _close(call: Awaitable[Any]) -> None:
    close = getattr(call, "close", None)
    if callable(close):
        close()  # never awaited: closing it spares a "coroutine was never awaited" warning


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
