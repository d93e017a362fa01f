"""Native function calling in the adapters: tools into the request, tool_calls out, history replay."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tool_calling_lm import ScriptedLM, search

import dspex
from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.adapters.types.tool import Tool, ToolCallResults, ToolCalls
from dspex.lm import LM

OPENAI_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "search", "arguments": '{"query": "cats"}'},
}


class Agent(dspex.Signature):
    question: str = dspex.InputField()
    tools: list[dspex.Tool] = dspex.InputField()
    tool_calls: dspex.ToolCalls = dspex.OutputField()


INPUTS = {"question": "Cats?", "tools": [Tool(search)]}


def test_native_calling_sends_the_tools_and_takes_them_out_of_the_prompt() -> None:
    lm = ScriptedLM("", [OPENAI_CALL])
    adapter = ChatAdapter(use_native_function_calling=True, parallel_tool_calls=True)
    sig, messages, kwargs = adapter.prepare_call(lm, {}, Agent, [], INPUTS)
    assert list(sig.fields) == ["question"]
    assert kwargs["tools"] == [Tool(search).format_as_litellm_function_call()]
    assert (kwargs["parallel_tool_calls"], kwargs["tool_choice"]) == (True, "auto")
    assert "search" not in messages[-1]["content"]


def test_without_native_calling_the_tool_options_are_dropped() -> None:
    lm = ScriptedLM("", None)
    request = {"tools": [{"type": "function"}], "tool_choice": "auto", "temperature": 0.5}
    sig, _, kwargs = ChatAdapter().prepare_call(lm, request, Agent, [], INPUTS)
    assert sig is Agent and kwargs == {"temperature": 0.5}


def test_a_tool_calls_output_without_tools_is_a_configuration_error() -> None:
    signature = dspex.Signature("question -> tool_calls: dspex.ToolCalls")
    with pytest.raises(dspex.ConfigurationError, match="did not provide any tools"):
        JSONAdapter().prepare_call(ScriptedLM("", None), {}, signature, [], {"question": "Q"})


def test_dspy_style_call_reads_the_provider_tool_calls() -> None:
    adapter = ChatAdapter(use_native_function_calling=True)
    outputs = adapter(ScriptedLM("", [OPENAI_CALL]), {}, Agent, [], INPUTS)
    calls = outputs[0]["tool_calls"]
    assert isinstance(calls, ToolCalls)
    assert [(c.id, c.name, c.args) for c in calls.tool_calls] == [("call_1", "search", {"query": "cats"})]


def test_text_that_is_not_in_the_format_does_not_hide_the_calls() -> None:
    adapter = ChatAdapter(use_native_function_calling=True)
    sig = dspex.Signature("question, tools: list[dspex.Tool] -> answer, tool_calls: dspex.ToolCalls")
    processed = sig.delete("tools").delete("tool_calls")
    output = {"text": "Let me look.", "tool_calls": [OPENAI_CALL]}
    value = adapter._call_postprocess(processed, sig, [output], None, {})[0]
    assert value["answer"] is None and value["tool_calls"].tool_calls[0].name == "search"


async def test_the_hot_path_calls_tools_natively() -> None:
    lm = ScriptedLM("", [OPENAI_CALL])
    result = await JSONAdapter().acall_result(lm, Agent, [], INPUTS)
    assert result.outputs["tool_calls"].tool_calls[0].args == {"query": "cats"}
    assert lm.requests[0]["tools"][0]["function"]["name"] == "search"


async def test_a_predict_with_a_tool_calls_output_gets_the_calls() -> None:
    lm = ScriptedLM("", [OPENAI_CALL])
    pred = await dspex.Predict(Agent, lm=lm, adapter=JSONAdapter()).acall(**INPUTS)
    assert pred.tool_calls.tool_calls[0].id == "call_1"


async def test_an_lm_without_function_calling_answers_in_text() -> None:
    text = json.dumps({"tool_calls": {"tool_calls": [{"name": "search", "args": {"query": "dogs"}}]}})
    lm = ScriptedLM(text, None, native=False)
    result = await JSONAdapter().acall_result(lm, Agent, [], INPUTS)
    assert result.outputs["tool_calls"].tool_calls[0].args == {"query": "dogs"}
    assert "tools" not in lm.requests[0]


def test_the_lm_client_keeps_the_message_tool_calls() -> None:
    lm = LM("openai/gpt-4o-mini", api_key="sk-test", cache=False)
    data = {
        "choices": [
            {"message": {"content": None, "tool_calls": [OPENAI_CALL]}, "finish_reason": "tool_calls"}
        ]
    }
    response = lm._chat_response(data, False, 0.0)
    assert response.text == "" and response.tool_calls == [OPENAI_CALL]
    assert lm.supports_function_calling


def _history_inputs(results: ToolCallResults | None) -> dict[str, Any]:
    call = ToolCalls.ToolCall(id="call_1", name="search", args={"query": "cats"})
    calls = ToolCalls(tool_calls=[call], tool_call_results=results)
    history = dspex.History(messages=[{"question": "Q1", "tool_calls": calls}])
    return {"question": "Q2", "history": history, "tools": [Tool(search)]}


class WithHistory(dspex.Signature):
    question: str = dspex.InputField()
    history: dspex.History = dspex.InputField()
    tools: list[dspex.Tool] = dspex.InputField()
    tool_calls: dspex.ToolCalls = dspex.OutputField()


def test_native_history_replays_calls_and_results_as_tool_messages() -> None:
    call = ToolCalls.ToolCall(id="call_1", name="search", args={"query": "cats"})
    results = ToolCallResults.from_tool_calls_and_values([call], [{"items": ["cat"]}])
    adapter = ChatAdapter(use_native_function_calling=True)
    _, messages, _ = adapter.prepare_call(ScriptedLM("", None), {}, WithHistory, [], _history_inputs(results))
    assert messages[2] == {"role": "assistant", "content": None, "tool_calls": [OPENAI_CALL]}
    assert messages[3] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "name": "search",
        "content": '{"items": ["cat"]}',
    }


def test_text_history_writes_the_results_in_a_user_turn() -> None:
    call = ToolCalls.ToolCall(id="call_1", name="search", args={"query": "cats"})
    results = ToolCallResults.from_tool_calls_and_values([call], ["cat"])
    _, messages, _ = ChatAdapter().prepare_call(
        ScriptedLM("", None), {}, WithHistory, [], _history_inputs(results)
    )
    assert messages[2]["role"] == "assistant" and "tool_call_results" not in messages[2]["content"]
    assert messages[3]["role"] == "user" and messages[3]["content"].startswith(
        "[[ ## tool_call_results ## ]]"
    )
