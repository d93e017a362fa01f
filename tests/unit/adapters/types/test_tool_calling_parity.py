"""Tool calling on the wire equals DSPy 3.4.1's: the request an adapter sends and what it parses back.

Each case runs the same DSPy-style adapter call (``adapter(lm, lm_kwargs, signature, demos, inputs)``)
through dspex and through real dspy, each with a recording LM that answers the same response, and
compares the messages, the tool options of the request (``tools``, ``tool_choice``,
``parallel_tool_calls``) and the parsed ``ToolCalls``. Native function calling (the LM supports it,
each adapter's default and both explicit settings) and text tool calls (the LM does not: the tools
are described in the prompt and the calls come back in the adapter's format) are both covered, and
so are ``Tool``, ``ToolCalls`` and a tool-calling ``History`` as prompt values.
"""

# No `from __future__ import annotations`: the signatures are built inside functions from a module
# argument (dspy or dspex), so their annotations must be evaluated where they are written.
import json
import os
import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import pytest
from tool_calling_lm import ScriptedLM, search

import dspex

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at DSPy's import
dspy = pytest.importorskip("dspy")

TOOL_OPTIONS = ("tools", "tool_choice", "parallel_tool_calls")
NATIVE_CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"query": "cats"}'}},
    {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}},
]


def weather(city: str) -> str:
    """The weather in a city, today."""
    return city


def our_lm(text: str, tool_calls: list[dict[str, Any]] | None, native: bool) -> ScriptedLM:
    """dspex's side: answers ``text`` (and ``tool_calls``), remembers each request."""
    return ScriptedLM(text, tool_calls, native=native, model="openai/scripted")


def their_lm(text: str, tool_calls: list[dict[str, Any]] | None, native: bool) -> Any:
    """dspy's side: the same answers through DSPy's (deprecated, still supported) ``forward`` seam."""

    class TheirLM(dspy.BaseLM):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(model="openai/scripted", model_type="chat", temperature=0.0, max_tokens=1000)
            self.requests: list[dict[str, Any]] = []

        @property
        def supports_function_calling(self) -> bool:
            return native

        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            self.requests.append({"messages": messages, **kwargs})
            message = {"role": "assistant", "content": text or None, "tool_calls": tool_calls}
            choice = {"index": 0, "finish_reason": "tool_calls" if tool_calls else "stop", "message": message}
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            return {"model": "scripted", "choices": [choice], "usage": usage}  # DSPy reads dicts too

    return TheirLM()


def agent_signature(mod: ModuleType) -> type:
    class Agent(mod.Signature):  # type: ignore[name-defined,misc]
        """Find what the question needs."""

        question: str = mod.InputField()
        tools: list[mod.Tool] = mod.InputField()  # type: ignore[name-defined]
        tool_calls: mod.ToolCalls = mod.OutputField()  # type: ignore[name-defined]

    return Agent


def adapter(mod: ModuleType, kind: str, options: dict[str, Any]) -> Any:
    return getattr(mod, kind)(**options)


def call(mod: ModuleType, kind: str, options: dict[str, Any], lm: Any, lm_kwargs: dict[str, Any]) -> Any:
    inputs = {"question": "Cats, and the weather in Oslo?", "tools": [mod.Tool(search), mod.Tool(weather)]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # DSPy's notice about BaseLM.forward
        return adapter(mod, kind, options)(lm, dict(lm_kwargs), agent_signature(mod), [], inputs)


def calls_of(outputs: Any) -> list[tuple[str | None, str, dict[str, Any]]]:
    value = outputs[0]["tool_calls"]
    return [(c.id, c.name, c.args) for c in value.tool_calls] if value is not None else []


def request_view(request: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    return request["messages"], {key: request[key] for key in TOOL_OPTIONS if key in request}


ADAPTER_OPTIONS = [
    ("ChatAdapter", {}),
    ("ChatAdapter", {"use_native_function_calling": True}),
    ("ChatAdapter", {"use_native_function_calling": True, "parallel_tool_calls": True}),
    ("JSONAdapter", {}),  # native by default, as in DSPy
    ("JSONAdapter", {"use_native_function_calling": False}),
    ("JSONAdapter", {"parallel_tool_calls": False}),
    ("XMLAdapter", {"use_native_function_calling": True}),
]


@pytest.mark.parametrize(("kind", "options"), ADAPTER_OPTIONS)
@pytest.mark.parametrize("native_lm", [True, False], ids=["lm-with-tools", "lm-without-tools"])
def test_requests_and_parsed_calls_equal_dspy(kind: str, options: dict[str, Any], native_lm: bool) -> None:
    ours, theirs = our_lm("", NATIVE_CALLS, native_lm), their_lm("", NATIVE_CALLS, native_lm)
    lm_kwargs = {"tool_choice": "required", "temperature": 0.3}  # dropped where tools are not native
    our_calls = calls_of(call(dspex, kind, options, ours, lm_kwargs))
    their_calls = calls_of(call(dspy, kind, options, theirs, lm_kwargs))

    our_messages, our_options = request_view(ours.requests[0])
    their_messages, their_options = request_view(theirs.requests[0])
    assert our_messages == their_messages
    assert our_options == their_options
    assert our_calls == their_calls


def text_calls(kind: str) -> str:
    """Two tool calls written in ``kind``'s text format, as an LM without native tools answers."""
    value = {
        "tool_calls": [
            {"name": "search", "args": {"query": "cats"}},
            {"name": "weather", "args": {"city": "Oslo"}},
        ]
    }
    if kind == "JSONAdapter":
        return json.dumps({"tool_calls": value})
    if kind == "XMLAdapter":
        return f"<tool_calls>{json.dumps(value)}</tool_calls>"
    return f"[[ ## tool_calls ## ]]\n{json.dumps(value)}\n\n[[ ## completed ## ]]"


@pytest.mark.parametrize("kind", ["ChatAdapter", "JSONAdapter", "XMLAdapter"])
def test_text_tool_calls_parse_like_dspy(kind: str) -> None:
    options = {"use_native_function_calling": False}
    ours, theirs = our_lm(text_calls(kind), None, False), their_lm(text_calls(kind), None, False)
    our_calls = calls_of(call(dspex, kind, options, ours, {}))
    their_calls = calls_of(call(dspy, kind, options, theirs, {}))
    assert our_calls == their_calls
    assert [name for _, name, _ in our_calls] == ["search", "weather"]
    assert request_view(ours.requests[0]) == request_view(theirs.requests[0])


def history_case(mod: ModuleType) -> tuple[type, list[dict[str, Any]], dict[str, Any]]:
    class Turn(mod.Signature):  # type: ignore[name-defined,misc]
        history: mod.History = mod.InputField()  # type: ignore[name-defined]
        question: str = mod.InputField()
        tools: list[mod.Tool] = mod.InputField()  # type: ignore[name-defined]
        tool_calls: mod.ToolCalls = mod.OutputField()  # type: ignore[name-defined]
        answer: str = mod.OutputField()

    earlier_calls = mod.ToolCalls.from_dict_list([{"name": "search", "args": {"query": "dogs"}}])
    history = mod.History(
        messages=[{"question": "Dogs?", "tool_calls": earlier_calls, "answer": "Dogs bark."}]
    )
    demo = {
        "question": "Birds?",
        "tools": [mod.Tool(search)],
        "tool_calls": earlier_calls,
        "answer": "They sing.",
    }
    inputs = {"history": history, "question": "Cats?", "tools": [mod.Tool(search), mod.Tool(weather)]}
    return Turn, [demo], inputs


@pytest.mark.parametrize("kind", ["ChatAdapter", "JSONAdapter", "XMLAdapter"])
def test_tools_tool_calls_and_history_format_like_dspy(kind: str) -> None:
    ours = adapter(dspex, kind, {"use_native_function_calling": False}).format(*history_case(dspex))
    theirs = adapter(dspy, kind, {"use_native_function_calling": False}).format(*history_case(dspy))
    assert [m["role"] for m in ours] == [m["role"] for m in theirs]
    for index, (mine, dspys) in enumerate(zip(ours, theirs, strict=True)):
        assert mine["content"] == dspys["content"], f"message {index} ({mine['role']}) differs"


def test_a_tool_formats_as_dspys_function_schema() -> None:
    for function in (search, weather):
        assert dspex.Tool(function).format_as_litellm_function_call() == (
            dspy.Tool(function).format_as_litellm_function_call()
        )
