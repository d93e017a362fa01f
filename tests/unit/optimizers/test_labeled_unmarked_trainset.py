"""LabeledFewShot takes examples without input marks, as DSPy's does: demos need their fields,
not the marks, and the predictor formats them as demos."""

from __future__ import annotations

import dspy

import dspex
from dspex.utils import DummyLM


def rows(package: object) -> list[object]:
    return [package.Example(question=f"q{i}", answer=f"a{i}") for i in range(3)]  # type: ignore[attr-defined]


def test_unmarked_examples_become_demos_as_in_dspy() -> None:
    theirs = dspy.LabeledFewShot(k=2).compile(dspy.Predict("question -> answer"), trainset=rows(dspy))
    ours = dspex.LabeledFewShot(k=2).compile(dspex.Predict("question -> answer"), trainset=rows(dspex))
    assert [dict(d) for d in ours.demos] == [dict(d) for d in theirs.demos]
    assert all(demo.input_keys is None for demo in ours.demos)


def test_an_unmarked_demo_is_shown_to_the_lm() -> None:
    program = dspex.LabeledFewShot(k=1).compile(
        dspex.Predict("question -> answer"), trainset=rows(dspex), sample=False
    )
    lm = DummyLM([{"answer": "a9"}])
    with dspex.context(lm=lm):
        assert program(question="q9").answer == "a9"
    messages = lm.history[-1]["messages"]
    texts = [str(message["content"]) for message in messages]
    assert any("q0" in text for text in texts) and any("a0" in text for text in texts)
