"""Feedback metrics: ``metric(gold, pred, trace, pred_name, pred_trace)`` -> float or Prediction.

    def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        if pred.answer == gold.answer:
            return 1.0
        return dspex.Prediction(score=0.0, feedback=f"expected {gold.answer}, not {pred.answer}")

GEPA calls the metric twice over: to score a run (``pred_name=None``) and, when it reflects on one
predictor, for feedback on that predictor's step (``pred_name`` and ``pred_trace`` set). A metric
that returns a bare number gets the feedback "This trajectory got a score of ..." (DSPy's text).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from typing import Any, Protocol, cast

from dspex.errors import FeedbackMetricError
from dspex.primitives import Example, Prediction

__all__ = [
    "DSPyTrace",
    "FeedbackMetricError",
    "GEPAFeedbackMetric",
    "PredictorFeedbackFn",
    "ScoreWithFeedback",
    "check_feedback_metric",
    "checked_score",
    "make_feedback_fn",
    "metric_name",
    "split_score",
]

# DSPy's trace: one (predictor, inputs, outputs) per predictor call, in call order.
DSPyTrace = list[tuple[Any, dict[str, Any], Prediction]]


class ScoreWithFeedback(Prediction):
    """What a feedback metric may return: ``score``, ``feedback`` and optional ``objective_scores``."""

    score: float
    feedback: str
    objective_scores: dict[str, float] | None


class GEPAFeedbackMetric(Protocol):
    """The metric GEPA takes (see the module docstring); GEPA passes the five positionally, so the
    parameters may have any names."""

    def __call__(
        self,
        gold: Example,
        pred: Prediction,
        trace: DSPyTrace | None,
        pred_name: str | None,
        pred_trace: DSPyTrace | None,
        /,
    ) -> float | Prediction: ...


class PredictorFeedbackFn(Protocol):
    """Feedback on one predictor's step of a run (what the adapter asks for when it reflects)."""

    def __call__(
        self,
        predictor_output: dict[str, Any],
        predictor_inputs: dict[str, Any],
        module_inputs: Example,
        module_outputs: Prediction,
        captured_trace: DSPyTrace,
    ) -> ScoreWithFeedback: ...


def metric_name(metric: Any) -> str:
    return getattr(metric, "__qualname__", None) or getattr(metric, "__name__", None) or repr(metric)


def check_feedback_metric(metric: Any) -> None:
    """FeedbackMetricError (a TypeError) unless ``metric`` takes the five arguments GEPA passes."""
    if not callable(metric):
        raise FeedbackMetricError(f"GEPA's metric must be callable, got {metric!r}")
    try:
        inspect.signature(metric).bind(None, None, None, None, None)
    except (TypeError, ValueError) as exc:
        raise FeedbackMetricError(
            f"GEPA metric {metric_name(metric)} must accept five arguments: "
            "(gold, pred, trace, pred_name, pred_trace); give the last three defaults of None "
            "to use it elsewhere too"
        ) from exc


def checked_score(value: Any, metric: Any) -> Any:
    """``value`` if it is a number or has a numeric ``score``; else FeedbackMetricError naming both."""
    score, _ = split_score(value)
    if isinstance(score, bool | numbers.Real):
        return value
    raise FeedbackMetricError(
        f"GEPA metric {metric_name(metric)} returned {value!r} ({type(value).__name__}); "
        "return a number or dspex.Prediction(score=<number>, feedback=<text>)"
    )


def split_score(value: Any) -> tuple[Any, dict[str, float]]:
    """``(score, objective_scores)`` of what a metric returned (a number or a Prediction).

    Any mapping-like result with ``get`` counts as a Prediction, so a DSPy ``Prediction`` works too.
    """
    if value is None or isinstance(value, bool | numbers.Real):
        return value, {}
    get = getattr(value, "get", None)
    if callable(get):
        return get("score"), dict(get("objective_scores") or {})
    return getattr(value, "score", value), {}


def make_feedback_fn(metric: Callable[..., Any], pred_name: str, predictor: Any) -> PredictorFeedbackFn:
    """The feedback function for predictor ``pred_name``: the metric with that predictor's step."""

    def feedback_fn(
        predictor_output: dict[str, Any],
        predictor_inputs: dict[str, Any],
        module_inputs: Example,
        module_outputs: Prediction,
        captured_trace: DSPyTrace,
    ) -> ScoreWithFeedback:
        step = [(predictor, predictor_inputs, predictor_output)]
        result = checked_score(metric(module_inputs, module_outputs, captured_trace, pred_name, step), metric)
        if not isinstance(result, bool | numbers.Real):  # a Prediction (or DSPy's) with score
            if result.get("feedback") is None:
                result["feedback"] = _score_only(result["score"])
            return cast(ScoreWithFeedback, result)  # a Prediction (dspex's or DSPy's) with both keys
        return ScoreWithFeedback(score=result, feedback=_score_only(result))

    return feedback_fn


def _score_only(score: Any) -> str:
    # DSPy's wording, so reflection prompts read the same as under DSPy.
    return f"This trajectory got a score of {score}."
