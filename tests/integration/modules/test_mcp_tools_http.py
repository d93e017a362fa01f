"""MCP tools over streamable HTTP: a real MCP server (``mcp``'s ``MCPServer`` under uvicorn on a
loopback port), a real client session, the tools converted by ``dspex.Tool.from_mcp_tool`` and used by
``ReActV2`` and ``ReAct`` against the simulated LM, which answers with tool calls over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_http_server import MCPHTTPServer

import dspex
from dspex.adapters import JSONAdapter
from dspex.errors import ConfigurationError, SecurityPolicyError
from dspex.lm import LM
from dspex.modules import ReAct, ReActV2
from dspex.processors.security import SecurityPolicy
from dspex.testing import SimulatedLMServer
from dspex.utils.mcp import mcp_tools, restrict_mcp_servers

QUESTION = "What is 12 + 30?"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer() as server:
        yield server


@pytest.fixture
def lm(sim: SimulatedLMServer) -> LM:
    sim.control.configure(latency=0.0)
    sim.control.reset()
    return LM("openai/sim-mcp", api_base=sim.base_url, cache=False)


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[MCPHTTPServer]:
    with MCPHTTPServer() as server:
        yield server


@pytest.fixture
def fresh(mcp_server: MCPHTTPServer) -> Iterator[MCPHTTPServer]:
    mcp_server.calls.clear()
    yield mcp_server
    restrict_mcp_servers(None)


async def converted(client: Client) -> list[dspex.Tool]:
    return [dspex.Tool.from_mcp_tool(client, tool) for tool in (await client.list_tools()).tools]


async def test_tools_called_async_and_sync_over_http(fresh: MCPHTTPServer) -> None:
    async with Client(fresh.url) as client:
        add, lookup, broken, _ = await converted(client)
        assert await add.acall(a=2, b=3) == "5"
        assert await lookup.acall(query="kafka") == "nothing found for 'kafka'"
        with pytest.raises(RuntimeError, match="archive service is down"):
            await broken.acall(query="q")

        def sync_call() -> Any:
            with dspex.context(allow_tool_async_sync_conversion=True):
                return add(a=20, b=22)

        assert await asyncio.to_thread(sync_call) == "42"  # through the session's own loop
    assert fresh.calls == [
        ("add", {"a": 2, "b": 3}),
        ("lookup", {"query": "kafka"}),
        ("broken", {"query": "q"}),
        ("add", {"a": 20, "b": 22}),
    ]


async def test_react_v2_calls_the_three_tools_in_one_turn_and_submits_the_sum(
    fresh: MCPHTTPServer, lm: LM
) -> None:
    async with Client(fresh.url) as client:
        tools = [tool for tool in await converted(client) if tool.name != "minus"]
        agent = ReActV2("question -> answer: int", tools=tools, lm=lm, adapter=JSONAdapter())
        pred = await agent.acall(question=QUESTION)

    assert pred.answer == 42 and pred.termination_reason == "submit"
    assert sorted(name for name, _ in fresh.calls) == ["add", "broken", "lookup"]
    assert ("add", {"a": 12, "b": 30}) in fresh.calls
    results = pred.history.messages[0]["tool_calls"].tool_call_results.tool_call_results
    by_name = {result.name: result for result in results}
    assert len(results) == 3 == len(by_name)  # all three calls in the first turn
    assert (by_name["add"].value, by_name["add"].is_error) == ("42", False)
    assert by_name["broken"].is_error and "archive service is down" in str(by_name["broken"].value)
    assert not by_name["lookup"].is_error


async def test_react_observes_the_mcp_result_and_finishes(fresh: MCPHTTPServer, lm: LM) -> None:
    async with Client(fresh.url) as client:
        add, lookup, *_ = await converted(client)
        pred = await ReAct("question -> answer: int", tools=[add, lookup], lm=lm).acall(question=QUESTION)
    assert pred.answer == 42
    assert pred.trajectory["tool_name_0"] == "add" and pred.trajectory["observation_0"] == "42"
    assert fresh.calls == [("add", {"a": 12, "b": 30})]


async def test_a_sync_program_call_reaches_the_session_on_its_loop(fresh: MCPHTTPServer, lm: LM) -> None:
    async with Client(fresh.url) as client:
        agent = ReAct("question -> answer: int", tools=await converted(client), lm=lm)
        # a sync call from a thread runs on dspex's bridge loop; the tool hands each call to this loop
        pred = await asyncio.to_thread(agent, question=QUESTION)
    assert pred.answer == 42 and fresh.calls == [("add", {"a": 12, "b": 30})]


async def test_a_raising_tool_is_an_observation_for_react(fresh: MCPHTTPServer, lm: LM) -> None:
    async with Client(fresh.url) as client:
        tools = {tool.name: tool for tool in await converted(client)}
        agent = ReAct("question -> answer: int", tools=[tools["add"], tools["minus"]], lm=lm)
        pred = await agent.acall(question="What is 30 - 12?")
    observation = pred.trajectory["observation_0"]
    assert pred.trajectory["tool_name_0"] == "minus" and observation.startswith("Execution error in minus: ")
    assert "Failed to call a MCP tool: " in observation and "subtraction service is down" in observation
    assert isinstance(pred.answer, int)  # the example ends with an answer, not an exception
    assert fresh.calls[0] == ("minus", {"a": 30, "b": 12})


async def test_a_restricted_process_uses_allowed_servers_only(fresh: MCPHTTPServer) -> None:
    async with Client(fresh.url) as client:
        [mcp_add, *_] = (await client.list_tools()).tools
        restrict_mcp_servers(SecurityPolicy(allow_mcp_servers=[fresh.url]).check_mcp_server)
        assert await dspex.Tool.from_mcp_tool(client, mcp_add).acall(a=1, b=1) == "2"
        restrict_mcp_servers(SecurityPolicy(allow_mcp_servers=["http://10.0.0.5/mcp"]).check_mcp_server)
        with pytest.raises(SecurityPolicyError) as refused:
            dspex.Tool.from_mcp_tool(client, mcp_add)
    assert f"MCP server {fresh.url} is not allowed" in str(refused.value)
    assert f"--allow-mcp-server {fresh.url}" in str(refused.value)
    assert fresh.calls == [("add", {"a": 1, "b": 1})]


async def test_a_program_with_mcp_tools_is_not_saved(fresh: MCPHTTPServer, tmp_path: Path) -> None:
    # its tools are bound to a live session: no import path a worker could load them by
    async with Client(fresh.url) as client:
        agent = ReActV2("question -> answer: int", tools=await converted(client))
    with pytest.raises(ConfigurationError, match="ReActV2 tool 'add'"):
        agent.save(tmp_path / "agent.json")


async def test_mcp_tools_connects_lists_and_converts(fresh: MCPHTTPServer, lm: LM) -> None:
    async with mcp_tools(fresh.url) as tools:
        assert [tool.name for tool in tools] == ["add", "lookup", "broken", "minus"]
        agent = ReAct("question -> answer: int", tools=tools[:1], lm=lm)
        assert (await agent.acall(question=QUESTION)).answer == 42
    with pytest.raises(KeyError, match="raised in the block"):  # itself, not an ExceptionGroup
        async with mcp_tools(fresh.url):
            raise KeyError("raised in the block")


async def test_mcp_tools_refuses_a_url_a_restricted_process_does_not_allow(fresh: MCPHTTPServer) -> None:
    restrict_mcp_servers(SecurityPolicy(allow_mcp_servers=["http://10.0.0.5/mcp"]).check_mcp_server)
    with pytest.raises(SecurityPolicyError, match=f"--allow-mcp-server {fresh.url}"):
        async with mcp_tools(fresh.url):
            pass
    restrict_mcp_servers(SecurityPolicy(allow_mcp_servers=[fresh.url]).check_mcp_server)
    async with mcp_tools(fresh.url) as tools:
        assert await tools[0].acall(a=1, b=2) == "3"
