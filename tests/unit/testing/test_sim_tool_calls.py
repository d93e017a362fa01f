"""The simulated LM's native tool calls: the scripted agent, its wire format, and agents driving it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import dspex
from dspex.testing import SimulatedLMServer
from dspex.testing._completion import build_completion

QUESTION = "What is 12 + 30?"


def function(name: str, **properties: str) -> dict[str, Any]:
    schema = {name: {"type": kind} for name, kind in properties.items()}
    parameters = {"type": "object", "properties": schema, "required": list(schema)}
    return {"type": "function", "function": {"name": name, "description": name, "parameters": parameters}}


TOOLS = [
    function("add", a="integer", b="integer"),
    function("lookup", query="string"),
    function("submit", answer="string"),
]


def body(*messages: dict[str, Any], **options: Any) -> dict[str, Any]:
    first = {"role": "user", "content": QUESTION}
    return {"model": "sim", "messages": [first, *messages], "tools": TOOLS, **options}


def message(payload: dict[str, Any]) -> dict[str, Any]:
    choice = payload["choices"][0]
    return dict(choice["message"], finish_reason=choice["finish_reason"])


def calls(answer: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in answer["tool_calls"]]


def results(answer: dict[str, Any], *values: str) -> list[dict[str, Any]]:
    """The assistant's calls and a tool message per call with these contents."""
    tool_messages = [
        {"role": "tool", "tool_call_id": call["id"], "content": value}
        for call, value in zip(answer["tool_calls"], values, strict=True)
    ]
    assistant = {"role": "assistant", "content": answer["content"], "tool_calls": answer["tool_calls"]}
    return [assistant, *tool_messages]


def test_the_first_turn_calls_every_tool_but_submit_at_once() -> None:
    done = build_completion(body())
    first = message(done.payload)
    assert first["finish_reason"] == "tool_calls"
    assert calls(first) == [("add", {"a": 12, "b": 30}), ("lookup", {"query": QUESTION})]
    assert [call["id"] for call in first["tool_calls"]] == [
        f"call_{done.request_hash[:12]}_{i}" for i in (0, 1)
    ]
    assert message(build_completion(body()).payload) == first  # deterministic
    assert done.correct is None and done.payload["usage"]["completion_tokens"] > 0


def test_without_parallel_tool_calls_it_calls_one_tool_per_turn() -> None:
    first = message(build_completion(body(parallel_tool_calls=False)).payload)
    assert calls(first) == [("add", {"a": 12, "b": 30})]
    second = message(build_completion(body(*results(first, "42"), parallel_tool_calls=False)).payload)
    assert calls(second) == [("lookup", {"query": QUESTION})]


def test_it_submits_the_operation_tools_result_once_every_tool_answered() -> None:
    first = message(build_completion(body()).payload)
    done = build_completion(body(*results(first, "42", "nothing found")))
    assert calls(message(done.payload)) == [("submit", {"answer": "42"})] and done.correct is True
    trusted = build_completion(body(*results(first, "41", "nothing found")))
    assert calls(message(trusted.payload)) == [("submit", {"answer": "41"})] and trusted.correct is False


def test_a_failed_tool_still_leads_to_submit() -> None:
    first = message(build_completion(body()).payload)
    failed = "Execution error in add: ConnectionRefusedError"
    done = build_completion(body(*results(first, failed, "Tool lookup unavailable, circuit open")))
    ((name, arguments),) = calls(message(done.payload))
    assert name == "submit" and arguments["answer"].lstrip("-").isdigit()  # the accuracy model's answer
    assert done.correct is not None


def test_tool_choice_forces_a_call_or_none() -> None:
    forced = {"type": "function", "function": {"name": "submit"}}
    done = build_completion(body(tool_choice=forced))
    ((name, arguments),) = calls(message(done.payload))  # no tool answered: the accuracy model decides
    assert name == "submit" and (arguments["answer"] == "42") == done.correct
    plain = message(build_completion(body(tool_choice="none")).payload)
    assert "tool_calls" not in plain and plain["finish_reason"] == "stop" and plain["content"]


def test_a_thought_in_the_adapters_format_comes_with_the_calls() -> None:
    messages = dspex.JSONAdapter().format(
        dspex.Signature("question -> next_thought"), demos=[], inputs={"question": QUESTION}
    )
    payload = build_completion({"model": "sim", "messages": messages, "tools": TOOLS}).payload
    assert json.loads(message(payload)["content"]) == {"next_thought": "I will call add, lookup."}


# ---------------------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(in_process=True) as server:
        yield server


def test_bad_tools_are_a_400(sim: SimulatedLMServer) -> None:
    bad = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "tools": "add"}
    response = httpx.post(f"{sim.base_url}/chat/completions", json=bad)
    assert response.status_code == 400 and "`tools`" in response.json()["error"]["message"]


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def lookup(query: str) -> str:
    """Look a query up."""
    return f"nothing found for {query}"


@pytest.mark.parametrize(
    "adapter",
    [dspex.JSONAdapter(), dspex.ChatAdapter(use_native_function_calling=True)],
    ids=["json", "chat-native"],
)
def test_a_react_v2_agent_runs_on_the_simulated_lm(sim: SimulatedLMServer, adapter: Any) -> None:
    lm = dspex.LM("openai/simulated", api_base=sim.base_url, cache=False)
    agent = dspex.ReActV2("question -> answer", tools=[add, lookup])
    with dspex.context(lm=lm, adapter=adapter):
        pred = agent(question=QUESTION)
    assert pred.answer == "42" and pred.termination_reason == "submit"
    first, last = pred.history.messages
    assert [call.name for call in first["tool_calls"].tool_calls] == ["add", "lookup"]
    values = [result.value for result in first["tool_calls"].tool_call_results.tool_call_results]
    assert values == [42, f"nothing found for {QUESTION}"]
    assert first["next_thought"] == "I will call add, lookup."
    assert [call.name for call in last["tool_calls"].tool_calls] == ["submit"]


def test_dspys_react_v2_runs_on_it_through_litellm(sim: SimulatedLMServer) -> None:
    dspy = pytest.importorskip("dspy")
    # a model litellm knows to call functions, so that DSPy sends native tools (the server ignores the name)
    lm = dspy.LM("openai/gpt-4o-mini", api_base=sim.base_url, api_key="sim", cache=False)
    agent = dspy.ReActV2("question -> answer", tools=[add, lookup])
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        pred = agent(question=QUESTION)
    assert pred.answer == "42" and pred.termination_reason == "submit"


def test_agents_calling_tools_in_text_get_the_same_script(sim: SimulatedLMServer) -> None:
    lm = dspex.LM("openai/simulated", api_base=sim.base_url, cache=False)
    agent = dspex.ReActV2("question -> answer", tools=[add, lookup])
    with dspex.context(lm=lm, adapter=dspex.ChatAdapter()):  # no native function calling by default
        pred = agent(question=QUESTION)
    assert pred.answer == "42" and pred.termination_reason == "submit"
    turns = [[call.name for call in message["tool_calls"].tool_calls] for message in pred.history.messages]
    assert turns == [["add", "lookup"], ["submit"]]


def test_dspys_react_v2_calling_tools_in_text_runs_on_it(sim: SimulatedLMServer) -> None:
    dspy = pytest.importorskip("dspy")
    # litellm does not know this model, so DSPy falls back to tool calls in text
    lm = dspy.LM("openai/simulated", api_base=sim.base_url, api_key="sim", cache=False)
    agent = dspy.ReActV2("question -> answer", tools=[add, lookup])
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        pred = agent(question=QUESTION)
    assert pred.answer == "42" and pred.termination_reason == "submit"
