"""Predict and ChainOfThought without an LM server: a scripted adapter answers."""

from __future__ import annotations

import pytest
from dspex_example_programs import ScriptedAdapter, offline_lm

import dspex
from dspex.adapters import ChatAdapter
from dspex.configuration import context
from dspex.errors import ConfigurationError, InputError
from dspex.modules import ChainOfThought, Predict
from dspex.primitives import Example, Prediction


async def test_predict_returns_outputs_with_trace_and_adapter() -> None:
    adapter = ScriptedAdapter()
    predict = Predict("question -> answer", lm=offline_lm(), adapter=adapter)
    pred = await predict.acall(question="2 + 3")
    assert isinstance(pred, Prediction) and pred.answer == "answer(2 + 3)" and pred.adapter == "scripted"
    assert [(s.predictor_path, s.predictor, s.inputs, s.outputs) for s in pred.trace] == [
        ("self", predict, {"question": "2 + 3"}, {"answer": "answer(2 + 3)"})
    ]
    assert pred.usage.lm_calls == 0  # the scripted adapter never called the LM


def test_sync_call_is_the_same_call() -> None:
    predict = Predict("question -> answer", lm=offline_lm(), adapter=ScriptedAdapter())
    pred = predict(question="q")
    assert pred.answer == "answer(q)" and pred.trace[0].predictor_path == "self"


async def test_missing_and_unknown_inputs_are_warned_about_as_dspy_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    predict = Predict("question, context -> answer", lm=offline_lm(), adapter=ScriptedAdapter())
    with caplog.at_level("WARNING"):
        await predict.acall(question="q")
    assert "Present: ['question']. Missing: ['context']" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        await predict.acall(qestion="q", question="q", context="c")
    assert "not in signature" in caplog.text and "['qestion']" in caplog.text
    with pytest.raises(InputError, match="Positional arguments are not allowed"):
        await predict.acall("q", "c")


async def test_lm_resolution_call_then_own_then_context() -> None:
    adapter = ScriptedAdapter()
    own, from_context, from_call = (
        offline_lm("openai/own"),
        offline_lm("openai/ctx"),
        offline_lm("openai/call"),
    )
    bare = Predict("question -> answer", adapter=adapter)
    with context(lm=from_context):
        await bare.acall(question="q")
        await Predict("question -> answer", adapter=adapter, lm=own).acall(question="q")
        await Predict("question -> answer", adapter=adapter, lm=own).acall(question="q", lm=from_call)
    assert [call["lm"] for call in adapter.calls] == [from_context, own, from_call]


async def test_no_lm_anywhere_says_how_to_set_one() -> None:
    with pytest.raises(ConfigurationError, match=r"has no LM to call: pass lm= .*dspex.configure\(lm="):
        await Predict("question -> answer").acall(question="q")


async def test_adapter_resolution_own_then_settings() -> None:
    own, from_settings = ScriptedAdapter(), ScriptedAdapter()
    with context(lm=offline_lm(), adapter=from_settings):
        await Predict("question -> answer").acall(question="q")
        await Predict("question -> answer", adapter=own).acall(question="q")
    assert len(from_settings.calls) == 1 and len(own.calls) == 1


async def test_config_merges_and_demos_reach_the_adapter() -> None:
    adapter = ScriptedAdapter()
    demos = [
        Example(question="1 + 1", answer="2").with_inputs("question"),
        {"question": "2 + 2", "answer": "4"},
    ]
    predict = Predict(
        "question -> answer", lm=offline_lm(), adapter=adapter, demos=demos, temperature=0.7, n=1
    )
    await predict.acall(question="q", config={"rollout_id": 3, "n": None})
    call = adapter.calls[0]
    assert call["config"] == {"temperature": 0.7, "n": None, "rollout_id": 3}
    # demos reach the adapter as they are kept (as in DSPy): no per-call conversion
    assert call["demos"] == predict.demos
    assert [dict(demo.items()) for demo in call["demos"]] == [
        {"question": "1 + 1", "answer": "2"},
        {"question": "2 + 2", "answer": "4"},
    ]
    assert all(isinstance(demo, Example) for demo in predict.demos)
    assert predict.config == {"temperature": 0.7, "n": 1}  # a call's config never sticks


def test_constructor_checks_types() -> None:
    with pytest.raises(ConfigurationError, match=r"needs a dspex\.BaseLM"):
        Predict("a -> b", lm="openai/gpt-4o-mini")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="a demo must be"):
        Predict("a -> b", demos=["not a demo"])  # type: ignore[list-item]


async def test_chain_of_thought_prepends_reasoning_and_exposes_predict() -> None:
    adapter = ScriptedAdapter()
    cot = ChainOfThought("question -> answer", lm=offline_lm(), adapter=adapter, temperature=0.3)
    assert list(cot.signature.output_fields) == ["reasoning", "answer"]
    assert cot.predict.config == {"temperature": 0.3}
    pred = await cot.acall(question="q")
    assert pred.reasoning == "reasoning(q)" and pred.answer == "answer(q)"
    assert [step.predictor_path for step in pred.trace] == ["predict"]
    assert cot.named_predictors() == [("predict", cot.predict)]


def test_chain_of_thought_prompt_matches_dspy() -> None:
    import dspy  # DSPy 3.4.1 from the dev extra: the reference for prompt parity

    class QA(dspex.Signature):
        """Answer the question with a number."""

        question: str = dspex.InputField()
        answer: str = dspex.OutputField(desc="a number")

    class DspyQA(dspy.Signature):
        """Answer the question with a number."""

        question: str = dspy.InputField()
        answer: str = dspy.OutputField(desc="a number")

    demo = {"question": "1 + 1", "reasoning": "one and one", "answer": "2"}
    for ours_sig, theirs_sig in [("question -> answer", "question -> answer"), (QA, DspyQA)]:
        ours = ChainOfThought(ours_sig).signature
        theirs = dspy.ChainOfThought(theirs_sig).predict.signature
        assert list(ours.output_fields) == list(theirs.output_fields) == ["reasoning", "answer"]
        assert (
            ours.output_fields["reasoning"].prefix
            == theirs.output_fields["reasoning"].json_schema_extra["prefix"]
        )
        our_messages = ChatAdapter().format(ours, [demo], {"question": "2 + 3"})
        their_messages = dspy.ChatAdapter().format(theirs, [dspy.Example(**demo)], {"question": "2 + 3"})
        assert our_messages == their_messages


def test_public_names() -> None:
    assert dspex.Predict is Predict and dspex.ChainOfThought is ChainOfThought
