"""ReActV2 with a scripted LM: DSPy's loop (submit, history, forced submit) with concurrent turns."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dspex_breadth_unit_tools import async_lookup, search

import dspex
from dspex.adapters import ChatAdapter
from dspex.adapters.types import History, ToolCalls
from dspex.errors import AdapterParseError, ConfigurationError
from dspex.modules import ReActV2, ToolPolicy
from dspex.utils import DummyLM


def turn(*items: tuple[str, dict[str, Any]], thought: str = "Next.") -> dict[str, Any]:
    """One scripted LM answer: a thought and these tool calls."""
    return {
        "next_thought": thought,
        "tool_calls": ToolCalls.from_dict_list([{"name": name, "args": args} for name, args in items]),
    }


def run(agent: ReActV2, answers: list[dict[str, Any]], **inputs: Any) -> tuple[dspex.Prediction, DummyLM]:
    lm = DummyLM(answers)
    with dspex.context(lm=lm, adapter=ChatAdapter()):
        return agent(**inputs), lm


def results(pred: dspex.Prediction, index: int) -> list[Any]:
    return pred.history.messages[index]["tool_calls"].tool_call_results.tool_call_results


def weather(city: str) -> str:
    """Sleeps 0.3 s, then reports."""
    time.sleep(0.3)
    return f"sunny in {city}"


def test_a_loop_of_tool_calls_ends_with_submit() -> None:
    agent = ReActV2("question -> answer", tools=[weather])
    pred, lm = run(
        agent,
        [turn(("weather", {"city": "Paris"})), turn(("submit", {"answer": "sunny"}))],
        question="Weather in Paris?",
    )
    assert pred.answer == "sunny" and pred.termination_reason == "submit"
    first, last = pred.history.messages
    assert first["question"] == "Weather in Paris?" and "question" not in last  # inputs recorded once
    assert first["tool_calls"].tool_calls[0].id == "call_0_0"
    assert [(r.call_id, r.value, r.is_error) for r in results(pred, 0)] == [
        ("call_0_0", "sunny in Paris", False)
    ]
    assert last["answer"] == "sunny" and len(lm.history) == 2


FORECASTS: list[tuple[float, float]] = []  # (start, end) of each forecast call


def forecast(city: str) -> str:
    """Sleeps 0.5 s, then forecasts."""
    started = time.monotonic()
    time.sleep(0.5)
    FORECASTS.append((started, time.monotonic()))
    return f"rain in {city}"


def test_the_calls_of_a_turn_run_at_once() -> None:
    FORECASTS.clear()
    agent = ReActV2("question -> answer", tools=[forecast])
    cities = [("forecast", {"city": city}) for city in ("Paris", "Oslo", "Rome")]
    pred, _ = run(agent, [turn(*cities), turn(("submit", {"answer": "ok"}))], question="q")
    assert [r.value for r in results(pred, 0)] == ["rain in Paris", "rain in Oslo", "rain in Rome"]
    # all three were running at one moment: each started before any ended (one after another, none
    # would); shown by the calls' own times, which a loaded machine cannot make overlap by accident
    assert len(FORECASTS) == 3
    assert max(start for start, _ in FORECASTS) < min(end for _, end in FORECASTS)


def test_three_sync_tools_meet_inside_one_turn() -> None:
    barrier = threading.Barrier(3, timeout=5)

    def meet(n: int) -> int:
        """Returns once three calls are inside."""
        barrier.wait()
        return n

    agent = ReActV2("question -> answer", tools=[meet])
    calls = [("meet", {"n": n}) for n in range(3)]
    pred, _ = run(agent, [turn(*calls), turn(("submit", {"answer": "ok"}))], question="q")
    assert [(r.value, r.is_error) for r in results(pred, 0)] == [(0, False), (1, False), (2, False)]


def test_submit_runs_after_the_other_calls_of_its_turn() -> None:
    done: list[str] = []

    def record(note: str) -> str:
        """Slow side effect."""
        time.sleep(0.1)
        done.append(note)
        return note

    agent = ReActV2("question -> answer", tools=[record])
    pred, _ = run(agent, [turn(("submit", {"answer": "42"}), ("record", {"note": "saved"}))], question="q")
    assert pred.answer == "42" and pred.termination_reason == "submit" and done == ["saved"]
    assert [r.name for r in results(pred, 0)] == ["submit", "record"]  # call order kept


def test_tool_failures_are_observations_and_the_agent_goes_on() -> None:
    def broken(x: int) -> int:
        """Raises."""
        raise RuntimeError("boom")

    def opaque(x: int) -> object:
        """Returns something JSON cannot hold."""
        return threading.Lock()

    agent = ReActV2("question -> answer", tools=[broken, opaque])
    bad = turn(("missing", {}), ("broken", {"x": 1}), ("broken", {"x": "one"}), ("opaque", {"x": 1}))
    pred, lm = run(agent, [bad, turn(("submit", {"answer": "recovered"}))], question="q")
    assert pred.answer == "recovered"
    expected = [
        "Unknown tool: missing. The available tools are: broken, opaque, submit.",
        "Execution error in broken: \nTraceback (most recent call last)",
        "Invalid arguments for broken: Arg x is invalid: 'one' is not of type 'integer'",
        "Execution error in opaque: it returned a lock, which cannot be sent as JSON",
    ]
    observed = results(pred, 0)
    assert [r.call_id for r in observed] == [f"call_0_{i}" for i in range(4)] and all(
        r.is_error for r in observed
    )
    for result, start in zip(observed, expected, strict=True):
        assert str(result.value).startswith(start)
    assert "RuntimeError: boom" in str(results(pred, 0)[1].value)
    assert "Unknown tool: missing" in lm.history[1]["messages"][-2]["content"]  # the LM saw it


def test_an_open_breaker_is_reported_instead_of_calling_the_tool() -> None:
    calls = 0

    def down(q: str) -> str:
        """A service that is down."""
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("connection refused")

    agent = ReActV2(
        "question -> answer", tools=[down], policies={"down": ToolPolicy(failure_threshold=1, open_s=30.0)}
    )
    script = [turn(("down", {"q": "a"})), turn(("down", {"q": "b"})), turn(("submit", {"answer": "n/a"}))]
    pred, _ = run(agent, script, question="q")
    assert calls == 1 and pred.answer == "n/a"
    assert str(results(pred, 1)[0].value).startswith("Tool down unavailable, circuit open")
    copy = agent.deepcopy()
    assert copy.runner.breakers["down"] is agent.runner.breakers["down"]  # one service, one breaker


def test_max_iters_ends_with_a_forced_submit() -> None:
    agent = ReActV2("question -> answer", tools=[weather], max_iters=1)
    pred, lm = run(
        agent, [turn(("weather", {"city": "Oslo"})), turn(("submit", {"answer": "cold"}))], question="q"
    )
    assert pred.answer == "cold" and pred.termination_reason == "forced_submit"
    assert "tool_choice" not in lm.history[1]["kwargs"]  # dropped: this LM has no function calling
    assert lm.history[1]["kwargs"]["reasoning_effort"] is None
    assert pred.history.messages[1]["tool_calls"].tool_calls[0].id == "call_1_0"


def test_a_call_may_lower_max_iters() -> None:
    agent = ReActV2("question -> answer", tools=[weather])
    pred, lm = run(agent, [turn(("submit", {"answer": "now"}))], question="q", max_iters=0)
    assert pred.termination_reason == "forced_submit" and len(lm.history) == 1


def test_a_turn_without_calls_forces_the_submit() -> None:
    agent = ReActV2("question -> answer", tools=[])
    pred, _ = run(agent, [turn(), turn(("submit", {"answer": "forced"}))], question="q")
    assert pred.answer == "forced" and pred.termination_reason == "forced_submit"


def test_a_forced_turn_without_submit_is_a_parse_error() -> None:
    agent = ReActV2("question -> answer", tools=[weather], max_iters=0)
    with pytest.raises(AdapterParseError, match="after max_iters: no submit call"):
        run(agent, [turn(("weather", {"city": "Rome"}))], question="q")


def test_a_forced_submit_that_fails_says_why() -> None:
    agent = ReActV2("question -> answer: int", tools=[], max_iters=0)
    with pytest.raises(AdapterParseError, match=r"submit failed\.\nInvalid arguments for submit"):
        run(agent, [turn(("submit", {"answer": "not a number"}))], question="q")


def test_submit_returns_the_outputs_by_name() -> None:
    agent = ReActV2("question -> answer: int, unit: str", tools=[])
    assert agent.tools["submit"](answer=3, unit="m") == {"answer": 3, "unit": "m"}
    pred, _ = run(agent, [turn(("submit", {"answer": 3, "unit": "m"}))], question="q")
    assert pred.answer == 3 and pred.unit == "m"


def test_an_earlier_history_is_continued() -> None:
    agent = ReActV2("question -> answer", tools=[])
    earlier = {"messages": [{"question": "old", "answer": "before"}]}
    pred, lm = run(agent, [turn(("submit", {"answer": "done"}))], question="new", history=earlier)
    assert isinstance(pred.history, History) and pred.history.messages[0] == earlier["messages"][0]
    assert any("old" in message["content"] for message in lm.history[0]["messages"][1:-1])


@pytest.mark.parametrize(
    ("signature", "tools", "message"),
    [
        ("question -> history", [], "Output field name\\(s\\) `history` are reserved"),
        ("tools, question -> answer", [], "Input field name\\(s\\) `tools` are reserved"),
        ("question -> answer", [dspex.Tool(lambda: None, name="submit")], "`submit` is reserved"),
        ("question -> answer", [weather, weather], "'weather' is given twice"),
    ],
)
def test_reserved_and_duplicate_names_are_refused(signature: str, tools: list[Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ReActV2(signature, tools=tools)


def test_the_inner_signature_is_dspy_s() -> None:
    agent = ReActV2("question -> answer", tools=[weather])
    signature = agent.react.signature
    assert list(signature.input_fields) == ["question", "history", "tools"]
    assert list(signature.output_fields) == ["next_thought", "tool_calls"]
    assert "The available tools are: `weather`, `submit`." in signature.instructions
    assert agent.tools["submit"](answer="Paris") == {"answer": "Paris"}


async def test_async_and_sync_tools_mix_under_acall() -> None:
    agent = ReActV2("question -> answer", tools=[async_lookup, search])
    lm = DummyLM(
        [turn(("async_lookup", {"key": "k"}), ("search", {"query": "q"})), turn(("submit", {"answer": "a"}))]
    )
    with dspex.context(lm=lm, adapter=ChatAdapter()):
        pred = await agent.acall(question="q")
    assert [r.is_error for r in results(pred, 0)] == [False, False]


def test_a_saved_agent_rebuilds_with_its_tools_and_policies(tmp_path: Path) -> None:
    policy = ToolPolicy(timeout_s=2.0, retries=1)
    agent = ReActV2(
        "question -> answer", tools=[search, async_lookup], max_iters=4, policies={"search": policy}
    )
    path = tmp_path / "agent.json"
    agent.save(path)
    loaded = dspex.load(path, allow_modules=["dspex_breadth_unit_tools"])
    assert isinstance(loaded, ReActV2) and loaded.dump() == agent.dump()
    assert loaded.max_iters == 4 and loaded.runner.policies == {"search": policy}
    assert list(loaded.tools) == ["search", "async_lookup", "submit"]


def test_a_policy_with_custom_failure_types_is_not_saved_silently() -> None:
    policy = ToolPolicy(failure_types=(ConnectionError,))
    with pytest.raises(ConfigurationError, match="@tool_policy"):
        ReActV2("question -> answer", tools=[search], policies={"search": policy}).dump()
