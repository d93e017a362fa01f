"""ReAct without an LM: tool checks, argument validation, observations, prompts, saving."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspex_breadth_unit_tools import Point, async_lookup, describe_point, search, thread_of_sync_tool

import dspex
from dspex.adapters import ChatAdapter
from dspex.errors import ConfigurationError, ProgramLoadError
from dspex.modules import ReAct, Tool
from dspex.modules.react import check_arguments, format_trajectory


def no_doc(a: int) -> int:
    return a


def no_hint(a) -> int:  # type: ignore[no-untyped-def]  # the point of the test
    """Has a docstring."""
    return 1


def star_args(*values: int) -> int:
    """Sums."""
    return sum(values)


def opaque(lock: threading.Lock) -> None:
    """Takes something JSON cannot describe."""


def finish(x: int) -> int:
    """Clashes with the built-in finish."""
    return x


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (star_args, "tool 'star_args': parameter 'values' is variadic positional"),
        (opaque, "tool 'opaque': parameter 'lock' has type"),
        (finish, "tool name 'finish' is reserved"),
        ("search", "ReAct tools must be functions or coroutines"),
    ],
)
def test_bad_tools_are_rejected_at_construction_naming_the_tool(tool: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ReAct("question -> answer", tools=[tool])


def test_tools_without_docstring_or_hints_are_accepted_as_in_dspy() -> None:
    agent = ReAct("question -> answer", tools=[no_doc, no_hint])
    assert agent.tools["no_doc"].desc == "" and agent.tools["no_doc"].args == {"a": {"type": "integer"}}
    assert agent.tools["no_hint"].args == {"a": {}}  # any JSON value
    assert check_arguments(agent.tools["no_hint"], {"a": [1, "x"]}) == {"a": [1, "x"]}


def test_a_tool_name_given_twice_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="'search' is given twice"):
        ReAct("question -> answer", tools=[search, search])


@pytest.mark.parametrize("max_iters", [0, -1, 1.5, True])
def test_max_iters_must_be_a_positive_integer(max_iters: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_iters"):
        ReAct("question -> answer", tools=[search], max_iters=max_iters)


def test_tools_are_described_by_name_docstring_and_hints() -> None:
    tool = Tool(search)
    assert str(tool) == (
        "search, whose description is <desc>Search the notes.        "
        "Returns up to `limit` matching lines.</desc>. "
        "It takes arguments {'query': {'type': 'string'}, 'limit': {'type': 'integer', 'default': 3}, "
        "'mode': {'enum': ['fast', 'exact'], 'type': 'string', 'default': 'fast'}}."
    )
    point = Tool(describe_point)
    assert point.args["point"]["properties"] == {
        "x": {"title": "X", "type": "integer"},
        "y": {"title": "Y", "type": "integer"},
    }
    assert "$ref" not in str(point.args) and "$defs" not in str(point.args)


def test_the_step_instructions_match_dspys_react() -> None:
    ours = ReAct("question -> answer: int", tools=[search]).react.signature
    theirs = dspy.ReAct("question -> answer: int", tools=[search]).react.signature
    assert ours.instructions == theirs.instructions
    assert list(ours.input_fields) == list(theirs.input_fields)
    assert list(ours.output_fields) == list(theirs.output_fields)
    assert ours.output_fields["next_tool_name"].annotation is str  # unknown names reach ReAct


def test_the_trajectory_reads_as_dspy_formats_it() -> None:
    trajectory = {"thought_0": "look it up", "tool_name_0": "search", "tool_args_0": {"query": "x"},
                  "observation_0": ["a", "b"]}  # fmt: skip
    agent = dspy.ReAct("question -> answer", tools=[search])
    assert format_trajectory(trajectory, ChatAdapter()) == agent._format_trajectory(trajectory)
    assert format_trajectory({}) == ""


async def test_observations_say_what_went_wrong() -> None:
    agent = ReAct("question -> answer", tools=[search, async_lookup, describe_point])
    assert await agent.observe("finish", {}) == "Completed."
    assert await agent.observe("lookup", {"key": "k"}) == (
        "Unknown tool 'lookup': the tools are search, async_lookup, describe_point, finish. Call one of them."
    )
    invalid = await agent.observe("search", {"query": "x", "limit": "many"})
    assert invalid == "Invalid arguments for search: Arg limit is invalid: 'many' is not of type 'integer'"
    missing = await agent.observe("search", {"limit": 2, "colour": "red"})
    assert missing.startswith(
        "Invalid arguments for search: unknown arguments ['colour'], missing arguments ['query']"
    )
    assert await agent.observe("search", "query=x") == (
        "Invalid arguments for search: arguments must be a JSON object, got str"
    )
    assert await agent.observe("describe_point", {"point": {"x": 1, "y": 2}}) == "(1, 2)"  # a Point first
    strict = await agent.observe("describe_point", {"point": {"x": 1, "y": "2"}})
    assert strict.endswith("Arg point is invalid: '2' is not of type 'integer'")


async def test_sync_tools_run_in_a_worker_thread_and_async_tools_are_awaited() -> None:
    agent = ReAct("question -> answer", tools=[search, async_lookup])
    thread_of_sync_tool.clear()
    assert await agent.observe("search", {"query": "q", "limit": 1}) == ["fast:q"]
    assert thread_of_sync_tool and thread_of_sync_tool[0] != threading.get_ident()
    assert await agent.observe("async_lookup", {"key": "k"}) == "value of k"


def test_a_saved_react_rebuilds_with_its_tools(tmp_path: Path) -> None:
    agent = ReAct("question -> answer: int", tools=[search, describe_point], max_iters=3)
    agent.react.signature = agent.react.signature.with_instructions("Optimized instructions.")
    path = tmp_path / "agent.json"
    agent.save(path)
    loaded = dspex.load(path, allow_modules=["dspex_breadth_unit_tools"])
    assert isinstance(loaded, ReAct) and loaded.dump() == agent.dump()
    assert loaded.max_iters == 3 and loaded.tools["describe_point"].func is describe_point
    assert loaded.react.signature.instructions == "Optimized instructions."
    assert dspex.load(path).dump() == agent.dump()  # no policy: any module may be imported
    assert Point(x=1, y=2).x == 1


def test_a_lambda_tool_works_but_cannot_be_saved() -> None:
    shout = lambda text: text.upper()  # noqa: E731
    shout.__doc__ = "Shout."
    shout.__annotations__ = {"text": str}
    agent = ReAct("question -> answer", tools=[shout])
    assert "<lambda>" in agent.tools
    with pytest.raises(ConfigurationError, match="cannot be saved by import path"):
        agent.dump()


def test_a_saved_react_without_state_is_a_load_error() -> None:
    data = ReAct("question -> answer", tools=[search]).dump()
    del data["state"]
    with pytest.raises(ProgramLoadError, match="needs its 'state'"):
        dspex.primitives.saving.load_program(data)
