"""Predict, ChainOfThought, Parallel, majority, BestOfN/Refine and ReAct as DSPy 3.4.1 behaves:
constructor attributes, call keywords, warnings, DSPy's trace, n > 1, scripted LMs only."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

import pytest

import dspex
from dspex.configuration import context
from dspex.errors import ConfigurationError, ContextWindowExceededError
from dspex.modules import BestOfN, ChainOfThought, Parallel, Predict, ReAct, Refine, majority
from dspex.modules._inputs import is_value_compatible, type_name
from dspex.primitives import Completions, Module, Prediction
from dspex.signatures import InputField, OutputField, Signature
from dspex.utils import DummyLM


class Typed(Signature):
    """Count things."""

    count: int = InputField()
    tags: list[str] = InputField()
    note: str | None = InputField()
    result: str = OutputField()


# -- Predict: construction -----------------------------------------------------------------------


def test_constructor_sets_dspys_attributes_and_reset_clears_them() -> None:
    predict = Predict("question -> answer", None, temperature=0.5)
    assert len(predict.stage) == 16 and predict.stage != Predict("question -> answer").stage
    assert predict.callbacks == [] and predict.config == {"temperature": 0.5}
    predict.lm, predict.traces, predict.train, predict.demos = "x", ["t"], ["t"], ["d"]
    predict.reset()
    assert (predict.lm, predict.traces, predict.train, predict.demos) == (None, [], [], [])
    predict.update_config(max_tokens=10)
    assert predict.get_config() == {"temperature": 0.5, "max_tokens": 10}


# -- Predict: calling ----------------------------------------------------------------------------


def test_positional_arguments_raise_dspys_value_error() -> None:
    with pytest.raises(ValueError, match=r"Positional arguments are not allowed .*'question, context'"):
        Predict("question, context -> answer")("q")


def test_no_lm_and_an_lm_that_is_a_string_are_value_errors() -> None:
    with pytest.raises(ValueError, match="No LM is loaded"):
        Predict("q -> a")(q="x")
    with pytest.raises(ValueError, match="not a string"):
        Predict("q -> a")(q="x", lm="openai/gpt-4o-mini")


def test_inputs_are_warned_about_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    predict = Predict(Typed, lm=DummyLM([{"result": "r"}] * 4))
    with caplog.at_level(logging.WARNING):
        predict(count=1, tags=["a"], extra="?")
    assert "not in signature" in caplog.text and "['extra']" in caplog.text
    assert "Not all input fields" not in caplog.text  # `note` admits None: it may be left out
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        predict(tags=["a"])
    assert "Missing: ['count']" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        predict(count="three", tags="a")
    assert "Type mismatch for field 'count': expected int" in caplog.text
    assert "Type mismatch for field 'tags': expected list[str]" in caplog.text
    caplog.clear()
    with context(warn_on_type_mismatch=False), caplog.at_level(logging.WARNING):
        predict(count="three", tags=["a"])
    assert "Type mismatch" not in caplog.text


def test_declared_input_defaults_fill_missing_inputs() -> None:
    class WithDefault(Signature):
        context: str = InputField(default="DEFAULT_CONTEXT")
        question: str = InputField()
        answer: str = OutputField()

    lm = DummyLM([{"answer": "a"}])
    pred = Predict(WithDefault, lm=lm)(question="q")
    assert pred.answer == "a" and "DEFAULT_CONTEXT" in lm.history[-1]["messages"][-1]["content"]


def test_type_checks_and_names_follow_dspy() -> None:
    assert is_value_compatible(["a", "b"], str) and not is_value_compatible([1], str)
    assert is_value_compatible({"k": 1}, dict[str, int]) and not is_value_compatible(
        {"k": "1"}, dict[str, int]
    )
    assert is_value_compatible((1, 2, 3), tuple[int, ...]) and not is_value_compatible(
        (1, "x"), tuple[int, int]
    )
    assert is_value_compatible("a", Literal["a", "b"]) and is_value_compatible(None, Literal["a"] | None)
    assert type_name(tuple[str, int]) == "tuple[str, int]" and type_name(Literal[1, 2]) == "Literal[1, 2]"
    assert type_name(tuple[int, ...]) == "tuple[int, ...]"


def test_call_keywords_override_signature_demos_config_and_lm() -> None:
    own, other = DummyLM([{"answer": "own"}]), DummyLM([{"summary": "other"}])
    predict = Predict("question -> answer", lm=own, temperature=0.1)
    pred = predict(text="t", signature="text -> summary", demos=[], config={"max_tokens": 5}, lm=other)
    assert pred.summary == "other" and other.history[-1]["kwargs"]["max_tokens"] == 5
    assert predict.config == {"temperature": 0.1}  # a call's config never sticks


def test_n_completions_are_distinct_rollouts_at_a_sampling_temperature() -> None:
    lm = DummyLM([{"answer": "first"}, {"answer": "second"}, {"answer": "third"}])
    pred = Predict("question -> answer", n=3, lm=lm)(question="q")
    assert isinstance(pred.completions, Completions) and pred.completions.answer == [
        "first",
        "second",
        "third",
    ]
    assert pred.answer == "first"
    requests = [entry["kwargs"] for entry in lm.history]
    assert [r["rollout_id"] for r in requests] == [0, 1, 2] and {r["temperature"] for r in requests} == {0.7}
    assert "n" not in requests[0]
    single = Predict("question -> answer", lm=DummyLM([{"answer": "x"}]))(question="q")
    assert single.completions is not None and len(single.completions) == 1


def test_dspy_trace_gets_each_call_bounded_and_can_be_off() -> None:
    predict = Predict("question -> answer", lm=DummyLM([{"answer": "a"}] * 10))
    with context(trace=[], max_trace_size=2):
        for _ in range(3):
            predict(question="q")
        trace = dspex.settings.trace
        assert len(trace) == 2 and trace[-1][0] is predict and trace[-1][1] == {"question": "q"}
        assert isinstance(trace[-1][2], Prediction)
        predict(question="q", _trace=False)
        assert len(dspex.settings.trace) == 2 and dspex.settings.trace[-1] is trace[-1]
    with context(trace=None):
        pred = predict(question="q")
        assert dspex.settings.trace is None and pred.trace[0].predictor is predict  # dspex's own trace stays


def test_an_lm_overriding_dspys_call_answers_through_it() -> None:
    class SpyLM(dspex.BaseLM):
        def __init__(self) -> None:
            super().__init__("spy")
            self.calls: list[dict[str, Any]] = []

        def __call__(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> list[Any]:
            self.calls.append({"messages": messages, "kwargs": kwargs})
            return ["[[ ## answer ## ]]\nfirst", "[[ ## answer ## ]]\nsecond"]

    lm = SpyLM()
    pred = Predict("question -> answer", lm=lm, n=2)(question="q")
    assert pred.completions.answer == ["first", "second"] and lm.calls[0]["kwargs"]["n"] == 2


def test_an_lm_overriding_call_and_acall_is_called_the_way_the_program_was() -> None:
    class BothWaysLM(dspex.BaseLM):
        def __init__(self) -> None:
            super().__init__("both")
            self.ways: list[str] = []

        def __call__(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> list[Any]:
            self.ways.append("sync")
            return ["[[ ## answer ## ]]\nfrom call"]

        async def acall(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> list[Any]:
            self.ways.append("async")
            return ["[[ ## answer ## ]]\nfrom acall"]

    lm = BothWaysLM()
    predict = Predict("question -> answer", lm=lm)
    assert predict(question="q").answer == "from call"
    assert asyncio.run(predict.acall(question="q")).answer == "from acall"
    assert lm.ways == ["sync", "async"]


# -- ChainOfThought -------------------------------------------------------------------------------


def test_chain_of_thought_takes_dspys_rationale_arguments() -> None:
    default = ChainOfThought("question -> answer")
    assert list(default.predict.signature.output_fields) == ["reasoning", "answer"]
    custom = ChainOfThought("question -> answer", rationale_field=OutputField(desc="Think aloud"))
    assert custom.predict.signature.output_fields["reasoning"].json_schema_extra["desc"] == "Think aloud"
    typed = ChainOfThought("question -> answer", rationale_field_type=list[str], temperature=0.2)
    assert typed.predict.signature.output_fields["reasoning"].annotation == list[str]
    assert typed.predict.config == {"temperature": 0.2}


# -- Parallel and majority -----------------------------------------------------------------------


def test_parallel_takes_dspys_constructor_and_nests() -> None:
    default = Parallel()
    assert (default.num_threads, default.max_errors, default.timeout, default.straggler_limit) == (
        8,
        10,
        120,
        3,
    )
    assert Parallel(4, 2, True, False, True, True, 0, 5).num_threads == 4

    def double(value: int) -> int:
        return value * 2

    inner = Parallel(num_threads=2)
    results = Parallel(num_threads=2)([(double, {"value": 1}), (inner, [(double, {"value": 2})])])
    assert results == [2, [4]]


def test_majority_takes_a_prediction_completions_or_a_list() -> None:
    rows = [{"answer": "2"}, {"answer": "3"}, {"answer": "3"}]
    for votes in (Prediction.from_completions(rows), Completions(rows), rows):
        result = majority(votes)
        assert result.completions[0]["answer"] == "3" and result.answer == "3"


# -- BestOfN / Refine ----------------------------------------------------------------------------


class _Wrapper(Module):
    def __init__(self) -> None:
        self.predictor = Predict("question -> answer")

    def forward(self, **kwargs: Any) -> Prediction:
        return self.predictor(**kwargs)


def test_refine_counts_a_failed_advice_as_a_failure_and_keeps_the_attempt() -> None:
    # The advisor's answers cannot be parsed (no discussion/advice fields): each advice fails.
    lm = DummyLM([{"answer": "Brussels"}, {"answer": "City of Brussels"}, {"answer": "Brussels"}])
    with context(lm=lm):
        result = Refine(_Wrapper(), N=3, reward_fn=lambda _, __: 0.0, threshold=1.0)(question="q")
    assert result.answer == "Brussels"


def test_best_of_n_puts_only_the_kept_attempt_on_dspys_trace() -> None:
    program = _Wrapper()
    lm = DummyLM([{"answer": "long answer"}, {"answer": "short"}])
    reward = lambda _, pred: 1.0 if pred.answer == "short" else 0.0  # noqa: E731
    with context(lm=lm, trace=[]):
        BestOfN(program, N=2, reward_fn=reward, threshold=1.0)(question="q")
        trace = dspex.settings.trace
    assert [(step[0], step[2].answer) for step in trace] == [(program.predictor, "short")]


# -- ReAct -------------------------------------------------------------------------------------------


def _echo(text: str) -> str:
    return text


def test_react_truncates_the_trajectory_on_context_overflow() -> None:
    agent = ReAct("question -> answer", tools=[_echo])
    assert agent.max_iters == 20
    trajectory = {
        f"{key}_{i}": i for i in range(2) for key in ("thought", "tool_name", "tool_args", "observation")
    }
    assert list(agent.truncate_trajectory(trajectory)) == [
        f"{key}_1" for key in ("thought", "tool_name", "tool_args", "observation")
    ]
    with pytest.raises(ContextWindowExceededError, match="only has one tool call"):
        agent.truncate_trajectory(trajectory)

    def overflow(**kwargs: Any) -> Prediction:
        raise ContextWindowExceededError("too long")

    with pytest.raises(ContextWindowExceededError, match="even after 3 attempts"):
        long = {
            f"{key}_{i}": i for i in range(4) for key in ("thought", "tool_name", "tool_args", "observation")
        }
        agent._call_with_potential_trajectory_truncation(overflow, long, question="q")


def test_react_tool_errors_reach_the_lm_with_a_traceback() -> None:
    def failing() -> None:
        raise ValueError("tool blew up")

    lm = DummyLM(
        [
            {"next_thought": "call it", "next_tool_name": "failing", "next_tool_args": {}},
            {"reasoning": "it failed", "answer": "n/a"},
        ]
    )
    with context(lm=lm):
        pred = ReAct("question -> answer", tools=[failing], max_iters=1)(question="q")
    observation = pred.trajectory["observation_0"]
    assert observation.startswith("Execution error in failing: \nTraceback (most recent call last):")
    assert observation.endswith("ValueError: tool blew up")


def test_react_configuration_errors_are_not_swallowed() -> None:
    with pytest.raises(ConfigurationError, match="No LM is loaded"):
        ReAct("question -> answer", tools=[_echo])(question="q")


def test_react_takes_dspy_style_tool_objects() -> None:
    class ToolLike:
        def __init__(self) -> None:
            self.func, self.name, self.desc = _echo, "say", "Repeat the text."

    agent = ReAct("question -> answer", tools=[ToolLike()])
    assert agent.tools["say"].desc == "Repeat the text." and agent.tools["say"].func is _echo
