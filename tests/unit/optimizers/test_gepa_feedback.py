"""The feedback-metric contract: five arguments at construction, a score at every call."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.modules import Predict
from dspex.optimizers.gepa.feedback import (
    FeedbackMetricError,
    check_feedback_metric,
    checked_score,
    make_feedback_fn,
    split_score,
)
from dspex.primitives import Example, Prediction


def two_arguments(gold: Any, pred: Any) -> float:
    return 0.0


def test_a_metric_without_five_arguments_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="five arguments"):
        check_feedback_metric(two_arguments)
    with pytest.raises(FeedbackMetricError):
        check_feedback_metric("not callable")
    check_feedback_metric(lambda gold, pred, trace=None, pred_name=None, pred_trace=None: 1.0)
    check_feedback_metric(lambda *args: 1.0)


@pytest.mark.parametrize("value", [1, 0.5, True, Prediction(score=0.25, feedback="x")])
def test_numbers_and_predictions_with_a_score_pass(value: Any) -> None:
    assert checked_score(value, two_arguments) is value


@pytest.mark.parametrize("value", ["1.0", None, Prediction(feedback="no score"), [1.0]])
def test_anything_else_names_the_metric_and_what_it_returned(value: Any) -> None:
    with pytest.raises(FeedbackMetricError, match="two_arguments returned"):
        checked_score(value, two_arguments)


def test_split_score_reads_objectives() -> None:
    assert split_score(0.5) == (0.5, {})
    assert split_score(Prediction(score=1.0, objective_scores={"cost": 0.2})) == (1.0, {"cost": 0.2})
    assert split_score(None) == (None, {})


def test_feedback_fn_passes_the_predictor_step_and_fills_in_feedback() -> None:
    seen: list[tuple[Any, ...]] = []
    predictor = Predict("question -> answer")

    def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        seen.append((pred_name, pred_trace))
        return 0.5 if pred_name == "numbers" else Prediction(score=1.0, feedback=None)

    numbers = make_feedback_fn(metric, "numbers", predictor)
    result = numbers({"answer": "2"}, {"question": "q"}, Example(question="q"), Prediction(answer="2"), [])
    assert result["score"] == 0.5 and result["feedback"] == "This trajectory got a score of 0.5."
    assert seen[0] == ("numbers", [(predictor, {"question": "q"}, {"answer": "2"})])
    other = make_feedback_fn(metric, "other", predictor)
    assert other({}, {}, Example(), Prediction(), [])["feedback"] == "This trajectory got a score of 1.0."
