"""dspex.Tool, ToolCalls and ToolCallResults: descriptions, argument checks, calls, parsing, schemas."""

from __future__ import annotations

import asyncio
import threading
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

import dspex
from dspex.adapters.types.tool import Tool, ToolCallResults, ToolCalls, convert_input_schema_to_tool_args
from dspex.errors import ConfigurationError, InputError
from dspex.utils.callback import BaseCallback


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Box(BaseModel):
    width: int
    label: str = "box"


def paint(box: Box, colour: Colour = Colour.RED, coats: int = 1) -> str:
    """Paint a box."""
    return f"{box.label}:{box.width}:{colour.value}:{coats}"


async def slow_echo(text: str) -> str:
    """Echo, slowly."""
    await asyncio.sleep(0.01)
    return text


def test_a_tool_is_described_from_the_function() -> None:
    tool = Tool(paint, arg_desc={"coats": "How many coats."})
    assert (tool.name, tool.desc) == ("paint", "Paint a box.")
    assert tool.args is not None
    assert tool.args["box"]["properties"]["width"] == {"title": "Width", "type": "integer"}
    assert tool.args["colour"]["default"] == "red"  # the enum member as its JSON value
    assert tool.args["coats"] == {"type": "integer", "default": 1, "description": "How many coats."}
    assert "$defs" not in str(tool.args) and "$ref" not in str(tool.args)


def test_what_the_caller_gives_is_kept() -> None:
    tool = Tool(paint, name="painter", desc="Paints.", args={"box": {"type": "object"}})
    assert (tool.name, tool.desc, tool.args) == ("painter", "Paints.", {"box": {"type": "object"}})


def test_the_openai_function_lists_arguments_without_a_default_as_required() -> None:
    function = Tool(paint).format_as_litellm_function_call()["function"]
    assert function["name"] == "paint" and function["description"] == "Paint a box."
    assert function["parameters"]["required"] == ["box"]


def test_calling_a_tool_checks_and_converts_its_arguments() -> None:
    tool = Tool(paint)
    assert tool(box={"width": 2}, colour="blue") == "box:2:blue:1"
    with pytest.raises(ValueError, match="Arg coats is invalid"):
        tool(box={"width": 2}, coats="two")
    with pytest.raises(InputError, match="Arg paint_it is not in the tool's args"):
        tool(box={"width": 2}, paint_it=True)


def test_extra_arguments_go_to_a_tool_taking_kwargs() -> None:
    def collect(x: int, **rest: Any) -> dict[str, Any]:
        return rest

    assert Tool(collect)(x=1, y=2) == {"y": 2}


async def test_acall_awaits_async_tools_and_runs_sync_ones_in_a_thread() -> None:
    threads: list[int] = []

    def where(x: int) -> int:
        threads.append(threading.get_ident())
        return x

    assert await Tool(slow_echo).acall(text="hi") == "hi"
    assert await Tool(where).acall(x=3) == 3
    assert threads and threads[0] != threading.get_ident()


def test_a_sync_call_of_an_async_tool_needs_the_setting() -> None:
    tool = Tool(slow_echo)
    with pytest.raises(ConfigurationError, match="allow_tool_async_sync_conversion"):
        tool(text="hi")
    with dspex.context(allow_tool_async_sync_conversion=True):
        assert tool(text="hi") == "hi"


def test_callbacks_hear_tool_calls() -> None:
    heard: list[str] = []

    class Listener(BaseCallback):
        def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            heard.append(f"start {instance.name} {inputs}")

        def on_tool_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
            heard.append(f"end {outputs}")

    with dspex.context(callbacks=[Listener()]):
        Tool(paint)(box={"width": 1})
    assert heard == ["start paint {'box': {'width': 1}}", "end box:1:red:1"]


def test_the_prompt_line_is_dspys() -> None:
    def bare(x: int) -> int:
        return x

    assert str(Tool(bare)) == "bare. It takes arguments {'x': {'type': 'integer'}}."
    assert str(Tool(slow_echo)).startswith("slow_echo, whose description is <desc>Echo, slowly.</desc>.")


def test_tool_calls_accept_every_shape_dspy_does() -> None:
    expected = [("search", {"q": "x"})]
    shapes: list[Any] = [
        {"tool_calls": [{"name": "search", "args": {"q": "x"}}]},
        [{"name": "search", "arguments": {"q": "x"}}],
        {"name": "search", "args": {"q": "x"}},
        {"type": "function", "function": {"name": "search", "arguments": '{"q": "x",}'}},  # repaired
    ]
    for shape in shapes:
        calls = ToolCalls.model_validate(shape)
        assert [(c.name, c.args) for c in calls.tool_calls] == expected
    with pytest.raises(ValueError):
        ToolCalls.model_validate({"foo": "bar"})


def test_ids_are_kept_but_not_formatted_nor_in_the_schema() -> None:
    calls = ToolCalls.from_dict_list([{"id": "c1", "name": "search", "args": {}}])
    assert calls.tool_calls[0].id == "c1"
    assert calls.format() == {"tool_calls": [{"name": "search", "args": {}}]}
    schema = TypeAdapter(ToolCalls).json_schema()
    assert "tool_call_results" not in schema["properties"] and "description" not in schema
    assert schema["$defs"]["ToolCall"]["required"] == ["name", "args"]


def test_results_travel_with_the_calls_when_dumped() -> None:
    call = ToolCalls.ToolCall(id="c1", name="search", args={"q": "x"})
    results = ToolCallResults.from_tool_calls_and_values([call], ["found"], is_errors=[False])
    dumped = ToolCalls(tool_calls=[call], tool_call_results=results).model_dump(mode="json")
    assert dumped["tool_call_results"]["tool_call_results"][0]["call_id"] == "c1"
    with pytest.raises(ValueError, match="same length"):
        ToolCallResults.from_tool_calls_and_values([call], [])


def test_execute_finds_the_function_by_name() -> None:
    def double(n: int) -> int:
        return 2 * n

    call = ToolCalls.ToolCall(name="double", args={"n": 4})
    assert call.execute(functions=[Tool(double)]) == 8
    assert call.execute(functions={"double": double}) == 8
    assert call.execute() == 8  # the caller's local names, as in DSPy
    with pytest.raises(ValueError, match="not found"):
        ToolCalls.ToolCall(name="triple", args={}).execute(functions={})


def test_an_input_schema_becomes_tool_arguments() -> None:
    schema = {
        "properties": {"q": {"type": "string", "description": "The query."}, "n": {"type": "integer"}},
        "required": ["n"],
    }
    args, types, descs = convert_input_schema_to_tool_args(schema)
    assert args == schema["properties"] and types == {"q": str, "n": int}
    assert descs == {"q": "The query.", "n": "No description provided. (Required)"}
