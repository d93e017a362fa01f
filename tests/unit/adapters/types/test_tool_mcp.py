"""MCP tools (``dspex.Tool.from_mcp_tool``, ``dspex.utils.mcp``) against a real MCP server of the
``mcp`` package, connected in-process (its memory transport; the HTTP transport is in
tests/integration/modules/test_mcp_tools_http.py), held against DSPy 3.4.1's conversion."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import dspy
import pytest
from mcp import Client
from mcp_demo_server import PIXEL, build_server

import dspex
from dspex.errors import ConfigurationError, InputError, SecurityPolicyError
from dspex.processors.security import SecurityPolicy
from dspex.utils.mcp import convert_mcp_tool, convert_mcp_tool_result, restrict_mcp_servers

TOOL_NAMES = ["add", "lookup", "broken", "parts", "picture"]


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[Client, list[Any]]]:
    """A client session on a fresh server, and the server's tools (entered and left in one task:
    the session's cancel scopes require it, which an async fixture does not guarantee)."""
    async with Client(build_server()) as client:
        yield client, list((await client.list_tools()).tools)


def by_name(client: Client, mcp_tools: list[Any], **options: Any) -> dict[str, dspex.Tool]:
    return {tool.name: dspex.Tool.from_mcp_tool(client, tool, **options) for tool in mcp_tools}


@pytest.fixture
def unrestricted() -> Iterator[None]:
    yield
    restrict_mcp_servers(None)  # a test that restricts never leaks it into the next


async def test_each_tool_is_described_as_dspy_describes_it() -> None:
    async with connected() as (client, mcp_tools):
        assert [tool.name for tool in mcp_tools] == TOOL_NAMES
        for mcp_tool in mcp_tools:
            ours, theirs = (
                dspex.Tool.from_mcp_tool(client, mcp_tool),
                dspy.Tool.from_mcp_tool(client, mcp_tool),
            )
            assert (ours.name, ours.desc, ours.args) == (theirs.name, theirs.desc, theirs.args)
            assert (ours.arg_types, ours.arg_desc) == (theirs.arg_types, theirs.arg_desc)
            assert str(ours) == str(theirs)  # the prompt's line for the tool
            assert ours.format_as_litellm_function_call() == theirs.format_as_litellm_function_call()


async def test_the_input_schema_gives_args_types_and_required_marks() -> None:
    async with connected() as (client, mcp_tools):
        lookup = by_name(client, mcp_tools)["lookup"]
        assert lookup.desc == "Look a query up (a coroutine on the server)."
        assert lookup.arg_types == {"query": str, "where": Any}  # anyOf has no single JSON type
        assert lookup.arg_desc == {
            "query": "What to look for (Required)",
            "where": "No description provided.",
        }
        assert lookup.args is not None and "$ref" not in str(lookup.args)  # the Place definition is inlined
        assert lookup.args["where"]["anyOf"][0]["properties"]["city"] == {"title": "City", "type": "string"}


async def test_calls_return_text_several_parts_or_the_non_text_parts() -> None:
    async with connected() as (client, mcp_tools):
        tools = by_name(client, mcp_tools)
        assert await tools["add"].acall(a=40) == "42"  # the server's text part, as DSPy returns it
        assert await tools["lookup"].acall(query="kafka", where={"city": "Oslo"}) == "found kafka in Oslo"
        assert await tools["parts"].acall(count=2) == ["part 0", "part 1"]
        [image] = await tools["picture"].acall()
        assert image.type == "image" and image.mime_type == "image/png"
        assert base64.b64decode(image.data) == PIXEL
        assert await dspy.Tool.from_mcp_tool(client, mcp_tools[3]).acall(count=2) == ["part 0", "part 1"]


async def test_structured_mode_returns_the_structured_content() -> None:
    async with connected() as (client, mcp_tools):
        structured = by_name(client, mcp_tools, result_mode="structured")
        assert await structured["add"].acall(a=1, b=2) == {"result": 3}
        assert await structured["picture"].acall() != []  # no structured content: the parts, as in text mode
        with pytest.raises(ConfigurationError, match="Unsupported MCP result mode"):
            dspex.Tool.from_mcp_tool(client, mcp_tools[0], result_mode="xml")  # type: ignore[arg-type]


async def test_an_error_result_raises_runtime_error_with_the_servers_text() -> None:
    async with connected() as (client, mcp_tools):
        broken_ours = by_name(client, mcp_tools)["broken"]
        broken_theirs = dspy.Tool.from_mcp_tool(client, mcp_tools[2])
        with pytest.raises(RuntimeError) as ours:
            await broken_ours.acall(query="q")
        with pytest.raises(RuntimeError) as theirs:
            await broken_theirs.acall(query="q")
        assert str(ours.value) == str(theirs.value)
        assert str(ours.value) == (
            "Failed to call a MCP tool: Error executing tool broken: the lookup service is down (query 'q')"
        )


async def test_arguments_are_checked_against_the_schema_before_the_server_is_called() -> None:
    async with connected() as (client, mcp_tools):
        add = by_name(client, mcp_tools)["add"]
        with pytest.raises(InputError, match="Arg a is invalid"):
            await add.acall(a="forty")
        assert await add.acall(a=1, b=1) == "2"


async def test_the_result_converter_is_dspys() -> None:
    async with connected() as (client, _):
        result = await client.call_tool("parts", {"count": 3})
        assert convert_mcp_tool_result(result) == dspy.utils.mcp._convert_mcp_tool_result(result)
        assert convert_mcp_tool_result(result, "structured") == {"result": ["part 0", "part 1", "part 2"]}


async def test_convert_mcp_tool_is_from_mcp_tool() -> None:
    async with connected() as (client, mcp_tools):
        tool = convert_mcp_tool(client, mcp_tools[0])
        assert isinstance(tool, dspex.Tool) and tool.name == "add" and await tool.acall(a=2) == "4"


async def test_a_sync_call_from_another_thread_reaches_the_sessions_loop() -> None:
    async with connected() as (client, mcp_tools):
        # the session's streams belong to this loop; the sync call runs on a loop of its own in a thread
        add = by_name(client, mcp_tools)["add"]

        def call_sync() -> Any:
            with dspex.context(allow_tool_async_sync_conversion=True):
                return add(a=5, b=6), threading.current_thread() is not threading.main_thread()

        assert await asyncio.to_thread(call_sync) == ("11", True)


async def test_a_sync_call_inside_the_sessions_loop_is_refused() -> None:
    async with connected() as (client, mcp_tools):
        add = by_name(client, mcp_tools)["add"]
        with (
            dspex.context(allow_tool_async_sync_conversion=True),
            pytest.raises(ConfigurationError, match="acall"),
        ):
            add(a=1)


async def test_a_restricted_process_refuses_a_client_that_names_no_url(unrestricted: None) -> None:
    async with connected() as (client, mcp_tools):
        add = by_name(client, mcp_tools)["add"]  # built before the restriction: its calls are checked too
        restrict_mcp_servers(SecurityPolicy(allow_mcp_servers=["http://127.0.0.1:8000/mcp"]).check_mcp_server)
        with pytest.raises(SecurityPolicyError, match="--allow-mcp-server"):
            dspex.Tool.from_mcp_tool(client, mcp_tools[0])
        with pytest.raises(SecurityPolicyError, match="names no URL"):
            await add.acall(a=1)
        restrict_mcp_servers(None)
        assert await add.acall(a=1) == "3"
