"""ReActV2's tool calls and tool breakers reach Prometheus through the callback seam.

A real ReActV2 runs on a scripted DummyLM with PrometheusCallback installed; the assertions read
the process registry. Tool names carry a random suffix so that tests do not share series.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

import dspex
from dspex.adapters import ChatAdapter
from dspex.adapters.types import ToolCalls
from dspex.modules import ReActV2, ToolPolicy
from dspex.observability import metrics
from dspex.observability.callbacks import PrometheusCallback, tool_outcome
from dspex.utils import DummyLM


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def turn(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """One scripted LM answer: a thought and these tool calls."""
    return {
        "next_thought": "Next.",
        "tool_calls": ToolCalls.from_dict_list([{"name": name, "args": args} for name, args in calls]),
    }


def named(func: Callable[..., Any], prefix: str) -> Callable[..., Any]:
    """``func`` under a name no other test uses."""
    func.__name__ = f"{prefix}_{uuid.uuid4().hex[:8]}"
    return func


def run(agent: ReActV2, answers: list[dict[str, Any]], **settings: Any) -> dspex.Prediction:
    with dspex.context(
        lm=DummyLM(answers), adapter=ChatAdapter(), callbacks=[PrometheusCallback()], **settings
    ):
        return agent(question="q")


def test_calls_and_durations_are_counted_by_tool_and_outcome() -> None:
    def slow(city: str) -> str:
        """Answers after 50 ms."""
        time.sleep(0.05)
        return f"sunny in {city}"

    def broken(x: int) -> int:
        """Raises."""
        raise RuntimeError("boom")

    slow, broken = named(slow, "slow"), named(broken, "broken")
    agent = ReActV2("question -> answer", tools=[slow, broken])
    script = [
        turn(
            (slow.__name__, {"city": "Paris"}), (slow.__name__, {"city": "Oslo"}), (broken.__name__, {"x": 1})
        ),
        turn(("submit", {"answer": "sunny"})),
    ]
    pred = run(agent, script)
    assert pred.answer == "sunny"
    assert sample("dspex_tool_calls_total", tool=slow.__name__, outcome="ok") == 2
    assert sample("dspex_tool_calls_total", tool=broken.__name__, outcome="error") == 1
    assert sample("dspex_tool_duration_seconds_count", tool=slow.__name__) == 2
    total = sample("dspex_tool_duration_seconds_sum", tool=slow.__name__)
    assert total is not None and 0.1 <= total < 2.0
    assert sample("dspex_tool_duration_seconds_bucket", tool=slow.__name__, le="0.025") == 0


def test_a_tool_breaker_state_is_exported_by_service() -> None:
    calls = 0

    def down(q: str) -> str:
        """A service that is down."""
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("connection refused")

    down = named(down, "down")
    service = f"svc-{uuid.uuid4().hex[:8]}"
    policy = ToolPolicy(failure_threshold=1, open_s=30.0, service=service)
    agent = ReActV2("question -> answer", tools=[down], policies={down.__name__: policy})
    script = [
        turn((down.__name__, {"q": "a"})),
        turn((down.__name__, {"q": "b"})),
        turn(("submit", {"answer": "n/a"})),
    ]
    run(agent, script)
    assert calls == 1  # the second turn met the open breaker: no call, so nothing counted
    assert sample("dspex_tool_calls_total", tool=down.__name__, outcome="error") == 1
    assert sample("dspex_tool_breaker_state", tool=service) == metrics.BREAKER_STATES["open"]
    assert agent.runner.breakers[service].state == "open"


def test_a_new_tool_service_starts_closed_and_closes_again_after_a_good_probe() -> None:
    state = {"up": False}

    def flaky(q: str) -> str:
        """Down until told otherwise."""
        if not state["up"]:
            raise ConnectionRefusedError("connection refused")
        return "fine"

    flaky = named(flaky, "flaky")
    agent = ReActV2(
        "question -> answer",
        tools=[flaky],
        policies={flaky.__name__: ToolPolicy(failure_threshold=2, open_s=0.05, max_open_s=0.05)},
    )
    run(agent, [turn((flaky.__name__, {"q": "a"})), turn(("submit", {"answer": "x"}))])
    assert sample("dspex_tool_breaker_state", tool=flaky.__name__) == 0  # made, one failure: closed
    run(agent, [turn((flaky.__name__, {"q": "b"})), turn(("submit", {"answer": "x"}))])
    assert sample("dspex_tool_breaker_state", tool=flaky.__name__) == 2
    time.sleep(0.1)
    state["up"] = True
    run(agent, [turn((flaky.__name__, {"q": "c"})), turn(("submit", {"answer": "x"}))])
    assert sample("dspex_tool_breaker_state", tool=flaky.__name__) == 0
    assert sample("dspex_tool_calls_total", tool=flaky.__name__, outcome="ok") == 1


def test_a_call_cut_off_by_its_timeout_counts_as_cancelled() -> None:
    async def stuck(q: str) -> str:
        """Never answers in time."""
        await asyncio.sleep(5)
        return "late"

    stuck = named(stuck, "stuck")
    agent = ReActV2(
        "question -> answer", tools=[stuck], policies={stuck.__name__: ToolPolicy(timeout_s=0.05)}
    )
    pred = run(agent, [turn((stuck.__name__, {"q": "a"})), turn(("submit", {"answer": "x"}))])
    assert pred.answer == "x"
    assert sample("dspex_tool_calls_total", tool=stuck.__name__, outcome="cancelled") == 1


def test_the_tool_label_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_tool_labels", set())
    monkeypatch.setattr(metrics, "MAX_TOOL_LABELS", 2)
    assert [metrics.tool_label(name) for name in ("a", "b", "a", "c", "d")] == [
        "a",
        "b",
        "a",
        "other",
        "other",
    ]


@pytest.mark.parametrize(
    ("exception", "outcome"),
    [
        (None, "ok"),
        (ValueError("x"), "error"),
        (TimeoutError(), "timeout"),
        (asyncio.CancelledError(), "cancelled"),
    ],
)
def test_tool_outcomes(exception: BaseException | None, outcome: str) -> None:
    assert tool_outcome(exception) == outcome


def test_the_tool_calls_are_in_the_prediction_and_the_trace() -> None:
    def lookup(key: str) -> str:
        """Looks a key up."""
        return f"value of {key}"

    lookup = named(lookup, "lookup")
    agent = ReActV2("question -> answer", tools=[lookup])
    trace: list[Any] = []
    pred = run(agent, [turn((lookup.__name__, {"key": "k"})), turn(("submit", {"answer": "v"}))], trace=trace)
    first = pred.history.messages[0]["tool_calls"]
    assert [(c.name, c.args) for c in first.tool_calls] == [(lookup.__name__, {"key": "k"})]
    assert [r.value for r in first.tool_call_results.tool_call_results] == ["value of k"]
    # what a predictor records for the example: the inner predictor's steps, the calls in their outputs
    assert any(lookup.__name__ in str(outputs) for _, _, outputs in trace)
    assert any("value of k" in str(inputs) for _, inputs, _ in trace)  # the results, in the next step
