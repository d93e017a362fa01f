"""MultiChainComparison without an LM: DSPy's prompt, the attempts' text, checks and saving."""

from __future__ import annotations

from pathlib import Path

import dspy
import pytest

import dspex
from dspex.adapters import ChatAdapter
from dspex.errors import ConfigurationError, InputError
from dspex.modules import MultiChainComparison
from dspex.primitives import Prediction

ATTEMPTS = [
    Prediction(reasoning="add 2 and 2\nthen stop", answer="4"),
    {"rationale": "count on fingers", "answer": "4"},
    {"reasoning": "guess", "answer": "5\nmaybe"},
]
TEXTS = [
    "«I'm trying to add 2 and 2 I'm not sure but my prediction is 4»",
    "«I'm trying to count on fingers I'm not sure but my prediction is 4»",
    "«I'm trying to guess I'm not sure but my prediction is 5»",
]


def test_the_prompt_is_dspys() -> None:
    ours = MultiChainComparison("question -> answer", M=3)
    theirs = dspy.MultiChainComparison("question -> answer", M=3)
    inputs = {"question": "What is 2 + 2?", **{f"reasoning_attempt_{i + 1}": t for i, t in enumerate(TEXTS)}}
    assert ChatAdapter().format(ours.predict.signature, [], inputs) == dspy.ChatAdapter().format(
        theirs.predict.signature, demos=[], inputs=inputs
    )
    assert ours.predict.config == {"temperature": 0.7}


def test_attempts_become_one_line_texts() -> None:
    mcc = MultiChainComparison("question -> answer", M=3)
    assert [mcc._attempt_text(a, i) for i, a in enumerate(ATTEMPTS, 1)] == TEXTS


async def test_the_number_of_attempts_must_be_m() -> None:
    mcc = MultiChainComparison("question -> answer", M=2)
    with pytest.raises(InputError, match="built for M=2 attempts, got 3"):
        await mcc.acall(completions=ATTEMPTS, question="q")
    with pytest.raises(InputError, match="needs `reasoning` \\(or `rationale`\\) and `answer`"):
        await mcc.acall(completions=[{"answer": "1"}, {"answer": "2"}], question="q")
    with pytest.raises(ConfigurationError, match="M must be an integer >= 1"):
        MultiChainComparison("question -> answer", M=0)


def test_a_saved_comparison_rebuilds(tmp_path: Path) -> None:
    mcc = MultiChainComparison("question -> answer: int", M=2, temperature=0.4, max_tokens=99)
    path = tmp_path / "mcc.json"
    mcc.save(path)
    loaded = dspex.load(path)
    assert isinstance(loaded, MultiChainComparison) and loaded.dump() == mcc.dump()
    assert (loaded.M, loaded.temperature, loaded.predict.config) == (
        2,
        0.4,
        {"temperature": 0.4, "max_tokens": 99},
    )
