"""EvaluationResult: DSPy's Prediction with score and results, and dspex's records built either way."""

from __future__ import annotations

import pytest

from dspex.evaluate import EvaluationResult, ExampleResult
from dspex.lm.usage import Usage
from dspex.primitives import Example, Prediction


def example(i: int) -> Example:
    return Example(question=f"q{i}", answer=str(i)).with_inputs("question")


def test_dspy_construction_repr_and_fields() -> None:
    result = EvaluationResult(score=100.0, results=[(example(1), {"answer": "1"}, 100.0)])
    assert repr(result) == "EvaluationResult(score=100.0, results=<list of 1 results>)"
    assert isinstance(result, Prediction)
    assert result["score"] == result.score == float(result) == 100.0
    assert result.keys() == ["score", "results"]
    expected = ExampleResult(0, example(1), {"answer": "1"}, 100.0, metric_value=100.0)  # type: ignore[arg-type]
    assert result.records[0] == expected
    assert (result.errors, result.total, result.processed, result.stopped_early) == (0, 1, 1, False)
    assert result.usage == Usage()


def test_records_construction_derives_dspy_results() -> None:
    records = [
        ExampleResult(0, example(0), Prediction(answer="0"), 1.0),
        ExampleResult(1, example(1), None, 0.0, error="ValueError: no"),
    ]
    usage = Usage(prompt_tokens=3, lm_calls=1)
    result = EvaluationResult(
        score=50.0, records=records, usage=usage, total=4, metric="m", stopped_early=True
    )
    assert result.results == [(example(0), Prediction(answer="0"), 1.0), (example(1), Prediction(), 0.0)]
    assert (result.errors, result.total, result.processed, result.metric) == (1, 4, 2, "m")
    assert result.usage == usage and result.error_messages == {1: "ValueError: no"}
    summary = result.to_dict()
    assert summary["score"] == 50.0 and summary["stopped_early"] and len(summary["results"]) == 2


def test_from_records_rounds_as_dspy_and_copy_keeps_the_run() -> None:
    records = [ExampleResult(i, example(i), Prediction(answer=str(i)), float(i == 0)) for i in range(3)]
    result = EvaluationResult.from_records(records[::-1], usage=Usage(), total=3, metric="m", elapsed_s=2.0)
    assert result.score == 33.33 and [r.index for r in result.records] == [0, 1, 2]
    assert result.examples_per_s == 1.5
    copied = result.copy(note="x")
    assert copied.score == 33.33 and copied.records == result.records and copied["note"] == "x"
    assert isinstance(copied, EvaluationResult) and copied.elapsed_s == 2.0
    assert result < 50 and result + 1 == pytest.approx(34.33)  # works as its score
