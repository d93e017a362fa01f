"""CodeAct with a scripted interpreter: tools in the sandbox, the step loop, trajectories, ownership."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.adapters.types.tool import Tool
from dspex.errors import ConfigurationError, ContextWindowExceededError
from dspex.modules import CodeAct
from dspex.modules.code_act import truncate_trajectory
from dspex.primitives import Prediction
from dspex.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError
from dspex.utils import DummyLM

pytestmark = pytest.mark.filterwarnings("ignore:CodeAct is deprecated:DeprecationWarning")


def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


def halve(x: float) -> float:
    """Half of x."""
    return x / 2


class Adder:
    def __call__(self, a: float, b: float) -> float:
        return a + b


class ScriptedInterpreter:
    """Meets the CodeInterpreter protocol; each ``execute`` gives (or raises) the next scripted result."""

    def __init__(self, results: list[Any] | None = None, on_execute: Callable[[str], None] | None = None):
        self.results = list(results or [])
        self.on_execute = on_execute
        self.codes: list[str] = []
        self.closed = False
        self.tools: dict[str, Callable[..., Any]] = {}

    def start(self) -> None:
        pass

    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        if self.closed:
            raise CodeInterpreterError("the interpreter was shut down")
        self.codes.append(code)
        if self.on_execute is not None:
            self.on_execute(code)
        result = self.results.pop(0) if self.results else ""
        if isinstance(result, BaseException):
            raise result
        return result

    def shutdown(self) -> None:
        self.closed = True


class Factory:
    """Makes a ScriptedInterpreter per call from a copy of one script, and keeps them."""

    def __init__(self, *results: Any, on_execute: Callable[[str], None] | None = None) -> None:
        self.results = list(results)
        self.on_execute = on_execute
        self.made: list[ScriptedInterpreter] = []

    def __call__(self) -> ScriptedInterpreter:
        interpreter = ScriptedInterpreter(list(self.results), self.on_execute)
        self.made.append(interpreter)
        return interpreter


class Recorder:
    """Stands in for a predictor: records its inputs, answers with the next fixed prediction (or raises)."""

    def __init__(self, *answers: dict[str, Any] | BaseException) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **inputs: Any) -> Prediction:
        self.calls.append(inputs)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return Prediction(**answer)


def _act(
    *steps: dict[str, Any], results: tuple[Any, ...] = (), max_iters: int = 5
) -> tuple[CodeAct, Factory]:
    factory = Factory(*results)
    act = CodeAct("question -> answer", tools=[add], max_iters=max_iters, interpreter_factory=factory)
    act.codeact = Recorder(*steps)  # type: ignore[assignment]
    act.extractor = Recorder({"answer": "2"})  # type: ignore[assignment]
    return act, factory


def test_constructing_warns_that_rlm_replaces_it() -> None:
    with pytest.warns(DeprecationWarning, match=r"CodeAct is deprecated .* RLM"):
        CodeAct("question -> answer", tools=[add])


def test_the_step_prompt_lists_the_tools_and_asks_for_code_and_a_flag() -> None:
    act = CodeAct("question -> answer", tools=[add, halve])
    step = act.codeact.signature
    assert list(step.fields) == ["question", "trajectory", "generated_code", "finished"]
    assert step.output_fields["finished"].annotation is bool
    assert "mark `finished=True` besides the final Python code" in step.instructions
    assert step.instructions.endswith(
        "(1) add, whose description is <desc>Add two numbers.</desc>. "
        "It takes arguments {'a': {'type': 'number'}, 'b': {'type': 'number'}}.\n"
        "(2) halve, whose description is <desc>Half of x.</desc>. "
        "It takes arguments {'x': {'type': 'number'}}."
    )
    assert list(act.extractor.signature.fields) == ["question", "trajectory", "reasoning", "answer"]


def test_the_whole_loop_runs_through_the_lm() -> None:
    lm = DummyLM(
        [
            {"generated_code": "```python\nresult = add(1, 1)\nprint(result)\n```", "finished": True},
            {"reasoning": "it printed 2", "answer": "2"},
        ]
    )
    interpreter = ScriptedInterpreter(["", "2\n"])
    pred = CodeAct("question -> answer", tools=[add], lm=lm)(interpreter, question="What is 1+1?")
    assert (pred.answer, pred.reasoning) == ("2", "it printed 2")
    assert pred.trajectory == {
        "generated_code_0": "result = add(1, 1)\nprint(result)",
        "code_output_0": '"2\\n"',
    }
    assert interpreter.codes[0].startswith("def add(a: float, b: float) -> float:")


def test_failed_steps_are_observations_and_the_loop_goes_on() -> None:
    act, _ = _act(
        {"generated_code": "a=b=c", "finished": True},  # unparsable: recorded, and does not end the loop
        {"generated_code": "unknown + 1", "finished": False},
        {"generated_code": "print(add(1, 1))", "finished": True},
        results=("", CodeExecutionError("NameError: name 'unknown' is not defined"), "2\n"),
    )
    pred = act(question="q")
    assert pred.trajectory == {
        "observation_0": "Failed to parse the generated code: Error: Code format is not correct.",
        "generated_code_1": "unknown + 1",
        "observation_1": "Failed to execute the generated code: NameError: name 'unknown' is not defined",
        "generated_code_2": "print(add(1, 1))",
        "code_output_2": '"2\\n"',
    }
    assert "[[ ## observation_0 ## ]]" in act.codeact.calls[1]["trajectory"]  # type: ignore[attr-defined]
    assert "[[ ## code_output_2 ## ]]" in act.extractor.calls[0]["trajectory"]  # type: ignore[attr-defined]


def test_max_iters_bounds_the_steps_and_a_call_may_change_it() -> None:
    act, _ = _act({"generated_code": "print(1)", "finished": False}, max_iters=3)
    assert len(act(question="q").trajectory) == 6
    assert len(act(question="q", max_iters=1).trajectory) == 2


def test_tools_must_be_plain_functions_with_source() -> None:
    with pytest.raises(ValueError, match=r"CodeAct only accepts functions and not callable objects\."):
        CodeAct("q -> a", tools=[Adder()])
    with pytest.raises(ConfigurationError, match="is a lambda"):
        CodeAct("q -> a", tools=[lambda x: x])
    with pytest.raises(ConfigurationError, match="given twice"):
        CodeAct("q -> a", tools=[add, Tool(halve, name="add")])


def test_a_renamed_tool_is_bound_to_its_name_in_the_sandbox() -> None:
    factory = Factory()
    act = CodeAct("question -> answer", tools=[Tool(add, name="plus")], interpreter_factory=factory)
    act.codeact = Recorder({"generated_code": "print(1)", "finished": True})  # type: ignore[assignment]
    act.extractor = Recorder({"answer": "2"})  # type: ignore[assignment]
    act(question="q")
    assert factory.made[0].codes[0].endswith("\nplus = add\n")


def test_each_call_gets_a_fresh_interpreter_that_is_shut_down() -> None:
    act, factory = _act({"generated_code": "print(add(1, 1))", "finished": True}, results=("", "2\n"))
    act(question="a")
    act(question="b")
    assert len(factory.made) == 2 and all(i.closed for i in factory.made)
    assert all(len(i.codes) == 2 for i in factory.made)  # the tool, then the step


def test_a_caller_owned_interpreter_is_used_and_left_running() -> None:
    act, factory = _act({"generated_code": "print(add(1, 1))", "finished": True})
    interpreter = ScriptedInterpreter()
    act(interpreter, question="q")
    assert factory.made == [] and len(interpreter.codes) == 2 and not interpreter.closed


def test_the_interpreter_is_shut_down_when_the_call_fails() -> None:
    act, factory = _act({"generated_code": "print(1)", "finished": True})
    act.extractor = Recorder(ValueError("extractor failed"))  # type: ignore[assignment]
    with pytest.raises(ValueError, match="extractor failed"):
        act(question="q")
    act, factory2 = _act(
        {"generated_code": "print(1)", "finished": True}, results=("", CodeInterpreterError("dead"))
    )
    with pytest.raises(CodeInterpreterError, match="dead"):
        act(question="q")
    assert [i.closed for i in factory.made + factory2.made] == [True, True]


def test_an_interpreter_keyword_is_refused_unless_it_is_an_input() -> None:
    act, factory = _act({"generated_code": "print(1)", "finished": True})
    with pytest.raises(TypeError, match="first positional argument"):
        act(question="q", interpreter=ScriptedInterpreter())
    assert factory.made == []
    named = CodeAct("interpreter -> answer", tools=[add], interpreter_factory=factory)
    named.codeact = Recorder({"generated_code": "print(interpreter)", "finished": True})  # type: ignore[assignment]
    named.extractor = Recorder({"answer": "CPython"})  # type: ignore[assignment]
    assert named(interpreter="CPython").answer == "CPython"
    assert named.codeact.calls[0]["interpreter"] == "CPython"  # type: ignore[attr-defined]


def test_a_context_overflow_drops_the_oldest_step() -> None:
    act, _ = _act(
        {"generated_code": "print(1)", "finished": False},
        {"generated_code": "print(2)", "finished": True},
        results=("", "1\n", "2\n"),
    )
    act.extractor = Recorder(ContextWindowExceededError("too long"), {"answer": "2"})  # type: ignore[assignment]
    pred = act(question="q")
    assert list(pred.trajectory) == ["generated_code_1", "code_output_1"]
    with pytest.raises(ContextWindowExceededError, match="only has one step"):
        truncate_trajectory({"generated_code_0": "x", "observation_0": "y"})


def test_concurrent_calls_register_tools_in_parallel_in_separate_interpreters() -> None:
    barrier = threading.Barrier(3)

    def wait_at_tool_definition(code: str) -> None:
        if code.startswith("def add"):
            barrier.wait(timeout=10)

    factory = Factory("", "2\n", on_execute=wait_at_tool_definition)
    act = CodeAct("question -> answer", tools=[add], interpreter_factory=factory)
    act.codeact = Recorder({"generated_code": "print(add(1, 1))", "finished": True})  # type: ignore[assignment]
    act.extractor = Recorder({"answer": "2"})  # type: ignore[assignment]

    async def three() -> list[Prediction]:
        return await asyncio.gather(*(act.acall(question=str(i)) for i in range(3)))

    assert [p.answer for p in asyncio.run(three())] == ["2"] * 3
    assert len({id(i) for i in factory.made}) == 3 and all(i.closed for i in factory.made)


def test_a_saved_code_act_rebuilds_with_its_tools(tmp_path: Path) -> None:
    act = CodeAct("question -> answer", tools=[add, halve], max_iters=2)
    path = tmp_path / "act.json"
    act.save(path)
    loaded = dspex.load(path)
    assert isinstance(loaded, CodeAct) and loaded.dump() == act.dump()
    assert loaded.max_iters == 2 and loaded.tools["halve"].func is halve
