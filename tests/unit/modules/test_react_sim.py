"""The simulated LM drives ReAct deterministically: prompts built by dspex's adapters, answers parsed back."""

from __future__ import annotations

from typing import Any

import pytest
from dspex_breadth_unit_tools import search

from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.modules import ReAct
from dspex.modules.react import format_trajectory
from dspex.modules.refine import OfferFeedback
from dspex.testing._completion import build_completion


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def times(x: float, y: float) -> float:
    """Multiply two numbers."""
    return x * y


AGENT = ReAct("question -> answer: int", tools=[search, add, times])
ADAPTERS = [ChatAdapter(), JSONAdapter()]


def _answer(adapter: Any, signature: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    body = {"model": "sim", "messages": adapter.format(signature, [], inputs)}
    if isinstance(adapter, JSONAdapter):
        body["response_format"] = {"type": "json_object"}
    text = build_completion(body).payload["choices"][0]["message"]["content"]
    return adapter.parse(signature, text)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["chat", "json"])
@pytest.mark.parametrize(
    ("question", "tool", "args"),
    [("What is 12 + 30?", "add", {"a": 12, "b": 30}), ("What is 6 * 7?", "times", {"x": 6.0, "y": 7.0})],
)
def test_the_first_step_calls_the_tool_for_the_operation(
    adapter: Any, question: str, tool: str, args: dict[str, Any]
) -> None:
    step = _answer(adapter, AGENT.react.signature, {"question": question, "trajectory": ""})
    assert step["next_tool_name"] == tool and step["next_tool_args"] == args
    assert tool in step["next_thought"]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["chat", "json"])
def test_after_a_call_it_finishes_and_the_extraction_uses_the_observation(adapter: Any) -> None:
    trajectory = {"thought_0": "use add", "tool_name_0": "add", "tool_args_0": {"a": 12, "b": 30},
                  "observation_0": 41}  # fmt: skip  # a tool's answer wins, even a wrong one
    inputs = {"question": "What is 12 + 30?", "trajectory": format_trajectory(trajectory, adapter)}
    step = _answer(adapter, AGENT.react.signature, inputs)
    assert (step["next_tool_name"], step["next_tool_args"]) == ("finish", {})
    extracted = _answer(adapter, AGENT.extract.signature, inputs)
    assert extracted["answer"] == 41


def test_with_no_fitting_tool_or_no_question_it_finishes() -> None:
    agent = ReAct("question -> answer", tools=[search])
    for question in ("What is 12 + 30?", "Who wrote Hamlet?"):
        step = _answer(ChatAdapter(), agent.react.signature, {"question": question, "trajectory": ""})
        assert step["next_tool_name"] == "finish"


def test_refine_advice_names_each_module() -> None:
    inputs = {name: "x" for name in OfferFeedback.input_fields}
    inputs.update(target_threshold=1.0, reward_value=0.0, module_names=["draft.predict", "check"])
    advice = _answer(ChatAdapter(), OfferFeedback, inputs)["advice"]
    assert set(advice) == {"draft.predict", "check"} and all("simulated advice" in v for v in advice.values())
