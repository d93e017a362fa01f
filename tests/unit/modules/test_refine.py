"""Refine without an LM: the advisor's signature and inputs, hints per predictor, saving."""

from __future__ import annotations

from pathlib import Path

import dspy
from dspex_breadth_unit_tools import constant_reward
from dspy.predict.refine import OfferFeedback as Theirs

import dspex
from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.modules import ChainOfThought, Predict, Refine
from dspex.modules.refine import HINT_FIELD, HintAdapter, OfferFeedback, describe_predictors
from dspex.primitives import Module


class Draft(Module):
    def __init__(self) -> None:
        self.draft = ChainOfThought("question -> answer")
        self.check = Predict("question, draft -> answer", adapter=JSONAdapter())


def test_the_advisor_signature_has_dspys_fields_and_types() -> None:
    ours = {name: spec.annotation for name, spec in OfferFeedback.fields.items()}
    theirs = {
        name: field.annotation for name, field in {**Theirs.input_fields, **Theirs.output_fields}.items()
    }
    assert ours == theirs


def test_each_predictor_gets_its_own_hint_around_its_own_adapter() -> None:
    refine = Refine(Draft(), N=2, reward_fn=constant_reward, threshold=1.0)
    rollout = refine.rollout(1)
    refine.prepare(rollout, {"draft.predict": "show the working"})
    adapters = {path: p.adapter for path, p in rollout.named_predictors()}
    assert isinstance(adapters["draft.predict"], HintAdapter) and isinstance(adapters["check"], HintAdapter)
    assert adapters["draft.predict"].hint == "show the working" and adapters["check"].hint == "N/A"
    assert isinstance(adapters["draft.predict"].inner, ChatAdapter)
    assert isinstance(adapters["check"].inner, JSONAdapter) and adapters["check"].name == "json"
    assert refine.module.check.adapter.__class__ is JSONAdapter  # the module itself is untouched


def test_a_hint_is_one_more_input_field_in_the_prompt() -> None:
    signature = dspex.make_signature("question -> answer")
    hinted = signature.append(
        HINT_FIELD, dspex.InputField(desc="A hint to the module from an earlier run"), str
    )
    messages = ChatAdapter().format(hinted, [], {"question": "q", HINT_FIELD: "be careful"})
    expected = dspy.ChatAdapter().format(
        dspy.Signature("question -> answer").append(
            "hint_", dspy.InputField(desc="A hint to the module from an earlier run"), type_=str
        ),
        demos=[],
        inputs={"question": "q", "hint_": "be careful"},
    )
    assert messages == expected


def test_the_advisor_reads_each_predictors_fields_and_instructions() -> None:
    text = describe_predictors(Draft())
    assert "Module draft.predict" in text and "Module check" in text
    assert "`reasoning` (str)" in text and "`draft` (str)" in text
    assert "Given the fields `question`, produce the fields `answer`." in text


def test_a_saved_refine_rebuilds(tmp_path: Path) -> None:
    refine = Refine(ChainOfThought("question -> answer"), N=3, reward_fn=constant_reward, threshold=0.5)
    path = tmp_path / "refine.json"
    refine.save(path)
    loaded = dspex.load(path)
    assert isinstance(loaded, Refine) and loaded.dump() == refine.dump()
    assert loaded.dump()["type"] == "dspex.Refine" and loaded.reward_fn is constant_reward
