"""ProgramOfThought with a scripted interpreter: prompts, the retry loop, and who owns the interpreter."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.modules import ProgramOfThought
from dspex.modules.program_of_thought import ProgramOfThoughtError, parse_code
from dspex.primitives import Prediction
from dspex.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput
from dspex.utils import DummyLM

pytestmark = pytest.mark.filterwarnings("ignore:ProgramOfThought is deprecated:DeprecationWarning")


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
    """Makes a ScriptedInterpreter per call, all sharing one script, and keeps them."""

    def __init__(self, *results: Any, on_execute: Callable[[str], None] | None = None) -> None:
        self.results = list(results)
        self.on_execute = on_execute
        self.made: list[ScriptedInterpreter] = []

    def __call__(self) -> ScriptedInterpreter:
        interpreter = ScriptedInterpreter(self.results, self.on_execute)
        self.made.append(interpreter)
        return interpreter


class Recorder:
    """Stands in for a predictor: records its inputs, answers with the next fixed prediction."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **inputs: Any) -> Prediction:
        self.calls.append(inputs)
        return Prediction(**(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]))


def _pot(*results: Any, max_iters: int = 3, **codes: str) -> tuple[ProgramOfThought, Factory]:
    factory = Factory(*results)
    pot = ProgramOfThought("question -> answer", max_iters=max_iters, interpreter_factory=factory)
    pot.code_generate = Recorder({"generated_code": codes.get("first", "SUBMIT({'answer': 2})")})  # type: ignore[assignment]
    pot.code_regenerate = Recorder({"generated_code": codes.get("again", "SUBMIT({'answer': 2})")})  # type: ignore[assignment]
    pot.generate_output = Recorder({"answer": "2"})  # type: ignore[assignment]
    return pot, factory


def test_constructing_warns_that_rlm_replaces_it() -> None:
    with pytest.warns(DeprecationWarning, match=r"ProgramOfThought is deprecated .* RLM"):
        ProgramOfThought("question -> answer")


def test_the_three_predictors_have_dspy_fields_and_instructions() -> None:
    pot = ProgramOfThought("question, context -> answer, confidence: float")
    generate, regenerate, answer = (
        p.signature for p in (pot.code_generate, pot.code_regenerate, pot.generate_output)
    )
    assert list(generate.fields) == ["question", "context", "reasoning", "generated_code"]
    assert list(regenerate.fields) == [
        "question",
        "context",
        "previous_code",
        "error",
        "reasoning",
        "generated_code",
    ]
    assert list(answer.fields) == [
        "question", "context", "final_generated_code", "code_output", "reasoning", "answer", "confidence",
    ]  # fmt: skip
    assert "calling the preloaded function `SUBMIT()`" in generate.instructions
    assert "mapping for the field(s): `answer`, `confidence`." in generate.instructions
    assert regenerate.instructions.startswith(
        "You are given `question`, `context`, `previous_code`, `error` due"
    )
    assert answer.instructions == (
        "Given the final code `question`, `context`, `final_generated_code`, `code_output`, "
        "provide the final `answer`, `confidence`."
    )


def test_a_submitted_answer_goes_to_the_answer_step_as_json() -> None:
    pot, factory = _pot(
        FinalOutput({"answer": 2}), first="```python\nresult = 1 + 1\nSUBMIT({'answer': result})\n```"
    )
    assert pot(question="1+1?").answer == "2"
    assert factory.made[0].codes == ["result = 1 + 1\nSUBMIT({'answer': result})"]
    assert pot.generate_output.calls == [  # type: ignore[attr-defined]
        {
            "question": "1+1?",
            "final_generated_code": "result = 1 + 1\nSUBMIT({'answer': result})",
            "code_output": '{"answer": 2}',
        }
    ]


def test_the_whole_loop_runs_through_the_lm() -> None:
    lm = DummyLM(
        [
            {"reasoning": "add", "generated_code": "```python\nresult = 1 + 1\n```"},
            {"reasoning": "read it", "answer": "2"},
        ]
    )
    interpreter = ScriptedInterpreter([2])
    pot = ProgramOfThought("question -> answer", lm=lm)
    pred = pot(interpreter, question="What is 1+1?")
    assert (pred.answer, pred.reasoning) == ("2", "read it")
    assert interpreter.codes == ["result = 1 + 1\nresult"]  # old-style code: its last variable is the output


@pytest.mark.parametrize(
    "failure", [CodeExecutionError("ZeroDivisionError: division by zero"), SyntaxError("bad")]
)
def test_failing_code_goes_back_to_the_lm_with_its_error(failure: Exception) -> None:
    pot, factory = _pot(failure, FinalOutput({"answer": 2}), first="1 / 0", again="SUBMIT({'answer': 2})")
    assert pot(question="q").answer == "2"
    assert pot.code_regenerate.calls == [{"question": "q", "previous_code": "1 / 0", "error": str(failure)}]  # type: ignore[attr-defined]
    assert factory.made[0].codes == ["1 / 0", "SUBMIT({'answer': 2})"]


def test_code_that_cannot_be_parsed_is_regenerated_without_running() -> None:
    pot, factory = _pot(FinalOutput({"answer": 2}), first="invalid=python=code")
    pot(question="q")
    assert pot.code_regenerate.calls[0]["error"] == "Error: Code format is not correct."  # type: ignore[attr-defined]
    assert factory.made[0].codes == ["SUBMIT({'answer': 2})"]


def test_after_max_iters_failures_it_gives_up_with_the_last_error() -> None:
    pot, factory = _pot(*[CodeExecutionError("NameError: x")] * 5, max_iters=2, first="x", again="x")
    with pytest.raises(
        ProgramOfThoughtError, match=r"Max hops reached\. Failed to run ProgramOfThought: NameError: x"
    ):
        pot(question="q")
    assert len(factory.made[0].codes) == 2 and factory.made[0].closed
    assert issubclass(ProgramOfThoughtError, RuntimeError)  # what DSPy raises here


@pytest.mark.parametrize("failure", [CodeInterpreterError("protocol corrupt"), ValueError("unexpected")])
def test_interpreter_failures_propagate_and_the_interpreter_is_shut_down(failure: Exception) -> None:
    pot, factory = _pot(failure)
    with pytest.raises(type(failure), match=str(failure)):
        pot(question="q")
    assert pot.code_regenerate.calls == []  # type: ignore[attr-defined]
    assert [i.closed for i in factory.made] == [True]


def test_each_call_gets_a_fresh_interpreter_that_is_shut_down() -> None:
    pot, factory = _pot(FinalOutput({"answer": 2}), FinalOutput({"answer": 2}))
    pot(question="a")
    pot(question="b")
    assert len(factory.made) == 2 and factory.made[0] is not factory.made[1]
    assert all(i.closed for i in factory.made)


def test_a_caller_owned_interpreter_is_used_and_left_running() -> None:
    pot, factory = _pot()
    interpreter = ScriptedInterpreter([FinalOutput({"answer": 2})])
    pot(interpreter, question="q")
    assert factory.made == [] and interpreter.codes and not interpreter.closed


def test_an_interpreter_keyword_is_refused_unless_it_is_an_input() -> None:
    pot, factory = _pot()
    with pytest.raises(TypeError, match="first positional argument"):
        pot(question="q", interpreter=ScriptedInterpreter())
    assert factory.made == []
    named = ProgramOfThought(
        "interpreter -> answer", interpreter_factory=Factory(FinalOutput({"answer": "x"}))
    )
    named.code_generate = Recorder({"generated_code": "SUBMIT({'answer': interpreter})"})  # type: ignore[assignment]
    named.generate_output = Recorder({"answer": "CPython"})  # type: ignore[assignment]
    assert named(interpreter="CPython").answer == "CPython"
    assert named.code_generate.calls == [{"interpreter": "CPython"}]  # type: ignore[attr-defined]


def test_bad_constructor_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'interpreter'"):
        ProgramOfThought("q -> a", interpreter=ScriptedInterpreter())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="not a factory"):
        ProgramOfThought("q -> a", interpreter_factory=ScriptedInterpreter())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_iters"):
        ProgramOfThought("q -> a", max_iters=0)


def test_a_factory_returning_no_interpreter_is_a_type_error() -> None:
    pot = ProgramOfThought("question -> answer", interpreter_factory=lambda: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="must implement CodeInterpreter"):
        pot(question="q")


def test_the_configured_factory_applies_when_the_module_has_none() -> None:
    pytest.importorskip("dspex.primitives.python_interpreter")  # resolving the default imports it
    factory = Factory(FinalOutput({"answer": 2}))
    pot = ProgramOfThought("question -> answer")
    pot.code_generate = Recorder({"generated_code": "SUBMIT({'answer': 2})"})  # type: ignore[assignment]
    pot.generate_output = Recorder({"answer": "2"})  # type: ignore[assignment]
    with dspex.context(interpreter_factory=factory):
        pot(question="q")
    assert len(factory.made) == 1 and factory.made[0].closed


def test_concurrent_calls_run_their_code_in_parallel_in_separate_interpreters() -> None:
    barrier = threading.Barrier(3)  # every execute waits for the other two: they must run at once
    factory = Factory(on_execute=lambda code: barrier.wait(timeout=10))
    factory.results = [FinalOutput({"answer": 2})] * 3
    pot = ProgramOfThought("question -> answer", interpreter_factory=factory)
    pot.code_generate = Recorder({"generated_code": "SUBMIT({'answer': 2})"})  # type: ignore[assignment]
    pot.generate_output = Recorder({"answer": "2"})  # type: ignore[assignment]

    async def three() -> list[Prediction]:
        return await asyncio.gather(*(pot.acall(question=str(i)) for i in range(3)))

    assert [p.answer for p in asyncio.run(three())] == ["2"] * 3
    assert len({id(i) for i in factory.made}) == 3 and all(i.closed for i in factory.made)


@pytest.mark.parametrize(
    ("reply", "code", "error"),
    [
        ("```python\nx = 1\nprint(x)\n```", "x = 1\nprint(x)", None),
        ("```py\nprint(1)\n```\nThat prints one.", "print(1)", None),
        ("```\nprint(2)\n```", "print(2)", None),
        ("```python\nprint(3)", "print(3)", None),  # an unclosed fence
        ("print(4)", "print(4)", None),
        ("y = 2 + 2", "y = 2 + 2\ny", None),
        ("print(a == b)", "print(a == b)", None),  # comparisons are not assignments
        ("x = 1\n---\ntrailing notes", "x = 1\nx", None),
        ("", "", "Error: Empty code after parsing."),
        ("a=b=c", "a=b=c", "Error: Code format is not correct."),
    ],
)
def test_parse_code(reply: str, code: str, error: str | None) -> None:
    assert parse_code(reply) == (code, error)


def test_a_saved_program_of_thought_rebuilds(tmp_path: Path) -> None:
    pot = ProgramOfThought("question -> answer: int", max_iters=4)
    path = tmp_path / "pot.json"
    pot.save(path)
    loaded = dspex.load(path)
    assert isinstance(loaded, ProgramOfThought) and loaded.max_iters == 4
    assert loaded.dump() == pot.dump()
