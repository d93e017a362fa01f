"""SemanticF1 and CompleteAndGrounded: LM-judged metrics as dspex Modules (DSPy's field names)."""

from __future__ import annotations

import pytest

import dspex
from dspex.evaluate.auto_evaluation import CompleteAndGrounded, SemanticF1, f1_score
from dspex.primitives import Example, Prediction
from dspex.utils import DummyLM


def test_f1_score_clamps_and_handles_zero() -> None:
    assert f1_score(0.8, 0.6) == pytest.approx(2 * 0.48 / 1.4)
    assert f1_score(1.5, -1.0) == 0.0 and f1_score(0.0, 0.0) == 0.0 and f1_score(2.0, 1.0) == 1.0


def test_semantic_f1_scores_and_passes_with_a_trace() -> None:
    lm = DummyLM([{"reasoning": "r", "precision": 0.8, "recall": 0.6}] * 2)
    example, pred = Example(question="q", response="a"), Prediction(response="b")
    metric = SemanticF1(threshold=0.7)
    with dspex.context(lm=lm):
        scored = metric(example, pred)
        traced = metric(example, pred, trace=[])
    assert isinstance(scored, Prediction) and scored.score == pytest.approx(2 * 0.48 / 1.4)
    assert traced.score is False  # 0.686 < 0.7
    assert list(metric.module.signature.output_fields) == ["reasoning", "recall", "precision"]


def test_decompositional_semantic_f1_asks_for_key_ideas() -> None:
    fields = SemanticF1(decompositional=True).module.signature.output_fields
    assert list(fields) == [
        "reasoning",
        "ground_truth_key_ideas",
        "system_response_key_ideas",
        "discussion",
        "recall",
        "precision",
    ]


def test_complete_and_grounded_judges_completeness_then_groundedness() -> None:
    lm = DummyLM(
        [
            {
                "reasoning": "r",
                "ground_truth_key_ideas": "a",
                "system_response_key_ideas": "a",
                "discussion": "same",
                "completeness": 1.0,
            },
            {"reasoning": "r", "system_response_claims": "a", "discussion": "supported", "groundedness": 0.5},
        ]
    )
    metric = CompleteAndGrounded()
    with dspex.context(lm=lm):
        result = metric(Example(question="q", response="a"), Prediction(response="a", context="ctx"))
    assert result.score == pytest.approx(2 * 0.5 / 1.5)
    inputs = metric.groundedness_module.signature.input_fields
    assert list(inputs) == ["question", "retrieved_context", "system_response"]
