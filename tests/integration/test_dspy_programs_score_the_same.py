"""Programs move between DSPy 3.4.1 and dspex and score the same on the simulated LM.

The simulated LM answers from the request itself (model, messages, seed, temperature), so the same
program with the same demos asks byte-identical prompts through either library and gets the same
answers: the scores must match exactly, example by example.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
import pytest

import dspex
from dspex.testing import SimulatedLMServer, arithmetic_dataset

INSTRUCTIONS = "Work out the arithmetic and answer with the number alone."


@pytest.fixture
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(latency=0.0) as server:
        yield server


def dspy_lm(sim: SimulatedLMServer) -> Any:
    # both LMs at their defaults: neither sends a temperature or max_tokens (DSPy 3.4.1's defaults)
    return dspy.LM("openai/sim", api_base=sim.base_url, api_key="sim", cache=False)


def dspex_lm(sim: SimulatedLMServer) -> dspex.LM:
    return dspex.LM("openai/sim", api_base=sim.base_url, api_key="sim", cache=False)


def numeric_match(example: Any, prediction: Any, trace: Any = None) -> bool:
    try:
        return float(str(prediction.answer).strip()) == float(example.answer)
    except ValueError:
        return False


def dspy_scores(program: Any, sim: SimulatedLMServer, rows: list[dict[str, Any]]) -> list[float]:
    devset = [dspy.Example(**row).with_inputs("question") for row in rows]
    with dspy.context(lm=dspy_lm(sim)):
        result = dspy.Evaluate(devset=devset, metric=numeric_match, num_threads=8)(program)
    return [float(score) for *_, score in result.results]


def dspex_scores(program: Any, sim: SimulatedLMServer, rows: list[dict[str, Any]]) -> list[float]:
    devset = [dspex.Example(**row).with_inputs("question") for row in rows]
    with dspex.context(lm=dspex_lm(sim)):
        result = dspex.Evaluate(devset=devset, metric=numeric_match, num_threads=8)(program)
    return [float(score) for *_, score in result.results]


def rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [example.toDict() for example in arithmetic_dataset(n, seed=seed)]


@pytest.mark.slow
def test_a_chain_of_thought_saved_by_dspy_scores_the_same_in_dspex(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    theirs = dspy.ChainOfThought(dspy.Signature("question -> answer", INSTRUCTIONS))
    theirs.predict.demos = [
        dspy.Example(question=row["question"], reasoning="Compute it step by step.", answer=row["answer"])
        for row in rows(4, seed=1)
    ]
    path = tmp_path / "program.json"
    theirs.save(str(path))

    ours = dspex.ChainOfThought("question -> answer")
    ours.load(path)
    assert ours.predict.signature.instructions == INSTRUCTIONS
    assert len(ours.predict.demos) == 4

    devset = rows(40, seed=2)
    expected = dspy_scores(theirs, sim, devset)
    assert dspex_scores(ours, sim, devset) == expected
    assert 0 < sum(expected) < len(expected)  # the simulated LM gets some right and some wrong


@pytest.mark.slow
def test_a_program_optimized_by_dspex_loads_into_dspy_and_scores_the_same(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    student = dspex.Predict(dspex.Signature("question -> answer", INSTRUCTIONS))
    trainset = [dspex.Example(**row).with_inputs("question") for row in rows(12, seed=3)]
    with dspex.context(lm=dspex_lm(sim)):
        optimized = dspex.BootstrapFewShot(metric=numeric_match, max_bootstrapped_demos=3).compile(
            student, trainset=trainset
        )
    assert optimized.demos, "bootstrapping kept no demo: nothing to carry over"
    path = tmp_path / "optimized.json"
    optimized.save(path)

    theirs = dspy.Predict("question -> answer")
    theirs.load(str(path))
    assert theirs.signature.instructions == INSTRUCTIONS
    assert [demo["question"] for demo in theirs.demos] == [demo.question for demo in optimized.demos]

    devset = rows(40, seed=4)
    expected = dspy_scores(theirs, sim, devset)
    assert dspex_scores(optimized, sim, devset) == expected
    assert 0 < sum(expected) < len(expected)
