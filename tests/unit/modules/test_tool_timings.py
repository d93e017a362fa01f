"""Tool-call latencies in results: each call's start and duration in Evaluate's per-example records,
never in what the LM sees (a ReAct trajectory, a ReActV2 history stay as DSPy's)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.adapters import ChatAdapter
from dspex.adapters.types import ToolCalls
from dspex.modules import CodeAct, ReAct, ReActV2
from dspex.modules.code_act import CODE_TOOL
from dspex.primitives import Prediction
from dspex.schemas import ToolCallRecord
from dspex.utils import DummyLM
from dspex.utils.tool_timings import (
    MAX_RECORDED_CALLS,
    ToolTimingLog,
    count_from,
    timed_tool_call,
    tool_timings,
)


async def short_lookup(key: str) -> str:
    """Answers after 0.2 s (async: on the event loop)."""
    await asyncio.sleep(0.2)
    return f"short {key}"


def long_lookup(key: str) -> str:
    """Answers after 0.4 s (sync: in a worker thread)."""
    time.sleep(0.4)
    return f"long {key}"


def turn(*items: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    calls = ToolCalls.from_dict_list([{"name": name, "args": args} for name, args in items])
    return {"next_thought": "Next.", "tool_calls": calls}


def evaluate_one(program: Any, lm: DummyLM, tmp_path: Path | None = None) -> Any:
    devset = [dspex.Example(question="q", answer="done").with_inputs("question")]
    with dspex.context(lm=lm, adapter=ChatAdapter()):
        result = dspex.Evaluate(devset=devset, metric=lambda example, pred: 1.0)(program)
    return result


def test_a_turn_of_two_concurrent_tools_records_each_call_s_start_and_duration(tmp_path: Path) -> None:
    agent = ReActV2("question -> answer", tools=[short_lookup, long_lookup])
    lm = DummyLM([
        turn(("short_lookup", {"key": "a"}), ("long_lookup", {"key": "b"})),
        turn(("submit", {"answer": "done"})),
    ])  # fmt: skip
    result = evaluate_one(agent, lm)
    [record] = result.records
    by_tool = {call.tool: call for call in record.tool_calls}
    assert len(record.tool_calls) == 3 and set(by_tool) == {"short_lookup", "long_lookup", "submit"}
    short, long = by_tool["short_lookup"], by_tool["long_lookup"]
    assert (short.outcome, long.outcome, by_tool["submit"].outcome) == ("ok", "ok", "ok")
    # each slept its time; a loaded 2-core machine may add some (the upper bounds are loose)
    assert 0.19 <= short.duration_s < 5.0 and 0.39 <= long.duration_s < 5.0
    # they ran at once: each started before the other ended (one after the other, one would not)
    assert long.start_s < short.start_s + short.duration_s
    assert short.start_s < long.start_s + long.duration_s
    assert long.start_s < short.start_s + short.duration_s and short.start_s < long.start_s + long.duration_s
    # submit runs after the turn's other calls, in the next turn
    assert by_tool["submit"].start_s >= long.start_s + long.duration_s
    # offsets are within the example's run
    assert all(call.start_s + call.duration_s <= record.latency_s + 1e-6 for call in record.tool_calls)
    # what the LM sees carries no timing: the history holds the calls and their results only
    prediction = record.prediction
    assert set(prediction.keys()) == {"answer", "history", "termination_reason"}
    assert "duration" not in json.dumps(prediction.history.model_dump(), default=str)
    exported = json.loads(result.to_json(tmp_path / "r.json").read_text())["results"][0]
    assert [call["tool"] for call in exported["tool_calls"]] == [call.tool for call in record.tool_calls]


def test_react_records_each_step_s_call_and_its_failures_and_keeps_dspy_s_trajectory() -> None:
    def boom(key: str) -> str:
        """Always fails."""
        raise RuntimeError("down")

    agent = ReAct("question -> answer", tools=[long_lookup, boom])
    lm = DummyLM([
        {"next_thought": "look", "next_tool_name": "long_lookup", "next_tool_args": {"key": "x"}},
        {"next_thought": "try", "next_tool_name": "boom", "next_tool_args": {"key": "x"}},
        {"next_thought": "oops", "next_tool_name": "nope", "next_tool_args": {}},
        {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
        {"reasoning": "r", "answer": "done"},
    ])  # fmt: skip
    [record] = evaluate_one(agent, lm).records
    assert [(c.tool, c.outcome) for c in record.tool_calls] == [
        ("long_lookup", "ok"), ("boom", "error"), ("nope", "invalid")
    ]  # fmt: skip  # finish is no call
    assert 0.39 <= record.tool_calls[0].duration_s < 5.0
    assert record.tool_calls[1].start_s >= record.tool_calls[0].start_s + record.tool_calls[0].duration_s
    trajectory = record.prediction.trajectory
    assert set(trajectory) == {
        f"{key}_{i}" for i in range(4) for key in ("thought", "tool_name", "tool_args", "observation")
    }


class _SlowInterpreter:
    """A CodeInterpreter whose every execution takes 0.1 s."""

    tools: dict[str, Any] = {}

    def start(self) -> None:
        pass

    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        time.sleep(0.1)
        return "ok"

    def shutdown(self) -> None:
        pass


class _Answers:
    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)

    def __call__(self, **inputs: Any) -> Prediction:
        return Prediction(**self.answers.pop(0))


@pytest.mark.filterwarnings("ignore:CodeAct is deprecated:DeprecationWarning")
def test_code_act_records_each_step_s_code_run() -> None:
    def add(a: float, b: float) -> float:
        """Add."""
        return a + b

    act = CodeAct("question -> answer", tools=[add], interpreter_factory=_SlowInterpreter)
    act.codeact = _Answers(  # type: ignore[assignment]
        {"generated_code": "```python\nprint(1)\n```", "finished": False},
        {"generated_code": "```python\nprint(2)\n```", "finished": True},
    )
    act.extractor = _Answers({"answer": "done"})  # type: ignore[assignment]
    with tool_timings() as log:
        pred = act(question="q")
    calls = log.records()
    assert [(c.tool, c.outcome) for c in calls] == [(CODE_TOOL, "ok"), (CODE_TOOL, "ok")]
    assert all(0.09 <= c.duration_s < 5.0 for c in calls) and calls[1].start_s >= calls[0].start_s + 0.09
    assert set(pred.trajectory) == {"generated_code_0", "code_output_0", "generated_code_1", "code_output_1"}


def test_without_an_open_log_timing_costs_nothing_and_a_log_keeps_a_bounded_number() -> None:
    with timed_tool_call("t") as timing:
        timing.outcome = "error"  # nobody listens: nothing to check but that it does not fail
    log = ToolTimingLog()
    for _ in range(MAX_RECORDED_CALLS + 3):
        log.add("t", time.perf_counter(), time.perf_counter(), "ok")
    assert len(log.records()) == MAX_RECORDED_CALLS and log.dropped == 3
    with tool_timings() as outer, tool_timings() as inner, timed_tool_call("x"):
        pass
    assert outer.records() == [] and [c.tool for c in inner.records()] == ["x"]
    with tool_timings() as late:
        time.sleep(0.05)
        count_from(time.perf_counter())  # e.g. the program starts after its inputs were read
        with timed_tool_call("y"):
            pass
    assert late.records()[0].start_s < 0.04


def test_a_cancelled_call_is_recorded_as_cancelled() -> None:
    async def run() -> list[ToolCallRecord]:
        with tool_timings() as log:

            async def call() -> None:
                with timed_tool_call("slow"):
                    await asyncio.sleep(5)

            task = asyncio.create_task(call())
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return log.records()

    [call] = asyncio.run(run())
    assert call.outcome == "cancelled" and 0.04 <= call.duration_s < 4.0  # cut off, not its 5 s


def test_tool_calls_travel_in_prediction_and_score_records_and_show_in_the_drill_down() -> None:
    from dspex.observability.dashboard.examples import example_detail
    from dspex.schemas import PredictionRecord, ScoreRecord, decode, encode

    call = ToolCallRecord(tool="search", start_s=0.25, duration_s=0.2, outcome="ok")
    prediction = PredictionRecord(
        task_id="t", job_id="j", candidate_id="c", example_index=0, example={}, outputs={"a": 1},
        worker_id="w", tool_calls=[call],
    )  # fmt: skip
    assert decode(encode(prediction), PredictionRecord).tool_calls == [call]
    score = ScoreRecord(
        job_id="j", candidate_id="c", example_index=0, task_id="t", score=1.0, tool_calls=[call]
    )
    assert example_detail(score, ["q"])["tool_calls"] == [call.model_dump(mode="json")]
    older = score.model_copy(update={"tool_calls": None})
    assert decode(encode(older), ScoreRecord).tool_calls is None
    assert example_detail(older, ["q"])["tool_calls"] == []
