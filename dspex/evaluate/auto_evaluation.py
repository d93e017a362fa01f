"""LM-judged metrics (DSPy's ``dspy.evaluate.auto_evaluation``): :class:`SemanticF1` and
:class:`CompleteAndGrounded`.

Both are dspex Modules built from :class:`~dspex.ChainOfThought`, called as metrics:
``metric(example, pred, trace=None)``. They read ``example.question``, ``example.response`` (the ground
truth), ``pred.response`` and, for groundedness, ``pred.context``, and return a ``Prediction`` whose
``score`` is the F1 of the two judged fractions (a bool, ``score >= threshold``, when ``trace`` is
given, as optimizers ask it)::

    evaluate = dspex.Evaluate(devset=devset, metric=SemanticF1(decompositional=True))
"""

from __future__ import annotations

from typing import Any

from dspex.modules.chain_of_thought import ChainOfThought
from dspex.primitives import Module, Prediction
from dspex.signatures import InputField, OutputField, Signature

__all__ = [
    "AnswerCompleteness",
    "AnswerGroundedness",
    "CompleteAndGrounded",
    "DecompositionalSemanticRecallPrecision",
    "SemanticF1",
    "SemanticRecallPrecision",
    "f1_score",
]

_RECALL_DESC = "fraction (out of 1.0) of the ground truth that the system response covers"
_PRECISION_DESC = "fraction (out of 1.0) of the system response that the ground truth covers"
_GROUND_TRUTH_IDEAS = "the key ideas of the ground truth, one by one"
_RESPONSE_IDEAS = "the key ideas of the system response, one by one"
_OVERLAP = "how the key ideas of the ground truth and of the system response overlap"


class SemanticRecallPrecision(Signature):
    """Judge a system's response against the ground truth answer to the question: report its recall and
    its precision. When reasoning first, list the key ideas of each response and say whether each one
    appears in the other response."""

    question: str = InputField()
    ground_truth: str = InputField()
    system_response: str = InputField()
    recall: float = OutputField(desc=_RECALL_DESC)
    precision: float = OutputField(desc=_PRECISION_DESC)


class DecompositionalSemanticRecallPrecision(Signature):
    """Judge a system's response against the ground truth answer to the question, idea by idea: list
    the key ideas of each response, discuss how they overlap, then report recall and precision."""

    question: str = InputField()
    ground_truth: str = InputField()
    system_response: str = InputField()
    ground_truth_key_ideas: str = OutputField(desc=_GROUND_TRUTH_IDEAS)
    system_response_key_ideas: str = OutputField(desc=_RESPONSE_IDEAS)
    discussion: str = OutputField(desc=_OVERLAP)
    recall: float = OutputField(desc=_RECALL_DESC)
    precision: float = OutputField(desc=_PRECISION_DESC)


class AnswerCompleteness(Signature):
    """Judge how completely a system's response covers the ground truth answer to the question: list
    the key ideas of each response, discuss how they overlap, then report completeness."""

    question: str = InputField()
    ground_truth: str = InputField()
    system_response: str = InputField()
    ground_truth_key_ideas: str = OutputField(desc=_GROUND_TRUTH_IDEAS)
    system_response_key_ideas: str = OutputField(desc=_RESPONSE_IDEAS)
    discussion: str = OutputField(desc=_OVERLAP)
    completeness: float = OutputField(desc=_RECALL_DESC)


class AnswerGroundedness(Signature):
    """Judge how well a system's response is grounded in the retrieved context (documents written by
    people): list the claims of the response that are not trivial or that deserve checking, then
    discuss how far the context, plus basic common sense, supports them."""

    question: str = InputField()
    retrieved_context: str = InputField()
    system_response: str = InputField()
    system_response_claims: str = OutputField(
        desc="the non-trivial or check-worthy claims of the system response"
    )
    discussion: str = OutputField(desc="how well the retrieved context supports each claim")
    groundedness: float = OutputField(
        desc="fraction (out of 1.0) of the system response the context supports"
    )


def f1_score(precision: float, recall: float) -> float:
    """The harmonic mean of ``precision`` and ``recall``, each clamped to [0, 1] first (0 if both are 0)."""
    precision, recall = _clamp(precision), _clamp(recall)
    total = precision + recall
    return 0.0 if total == 0 else 2 * precision * recall / total


def _clamp(value: float) -> float:
    return max(0.0, min(1.0, float(value)))


def _verdict(score: float, threshold: float, trace: Any) -> Prediction:
    # Evaluation wants the number; an optimizer (trace given) wants pass/fail.
    return Prediction(score=score if trace is None else score >= threshold)


class SemanticF1(Module):
    """Semantic F1 of ``pred.response`` against ``example.response``, from LM-judged recall and precision.

    ``threshold`` (0.66): the score a traced call must reach to pass. ``decompositional``: judge idea by
    idea (:class:`DecompositionalSemanticRecallPrecision`).
    """

    def __init__(self, threshold: float = 0.66, decompositional: bool = False) -> None:
        self.threshold = threshold
        signature = DecompositionalSemanticRecallPrecision if decompositional else SemanticRecallPrecision
        self.module = ChainOfThought(signature)

    async def aforward(self, example: Any, pred: Any, trace: Any = None) -> Prediction:
        """Judge one prediction; ``Prediction(score=...)``."""
        judged = await self.module.acall(
            question=example.question, ground_truth=example.response, system_response=pred.response
        )
        return _verdict(f1_score(judged.precision, judged.recall), self.threshold, trace)


class CompleteAndGrounded(Module):
    """F1 of completeness (against ``example.response``) and groundedness (in ``pred.context``), LM-judged.

    ``threshold`` (0.66): the score a traced call must reach to pass.
    """

    def __init__(self, threshold: float = 0.66) -> None:
        self.threshold = threshold
        self.completeness_module = ChainOfThought(AnswerCompleteness)
        self.groundedness_module = ChainOfThought(AnswerGroundedness)

    async def aforward(self, example: Any, pred: Any, trace: Any = None) -> Prediction:
        """Judge one prediction; ``Prediction(score=...)``."""
        # One after the other, as DSPy: a scripted LM answers in call order.
        completeness = await self.completeness_module.acall(
            question=example.question, ground_truth=example.response, system_response=pred.response
        )
        groundedness = await self.groundedness_module.acall(
            question=example.question, retrieved_context=pred.context, system_response=pred.response
        )
        score = f1_score(groundedness.groundedness, completeness.completeness)
        return _verdict(score, self.threshold, trace)
