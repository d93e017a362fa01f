"""GEPA's task on the simulated LM: a secret phrase that raises accuracy, named only in feedback.

    metric = phrase_feedback_metric(seed=3)      # names secret_phrase(3) when an answer is wrong
    dspex.GEPA(metric, auto="light", reflection_lm=sim_lm).compile(program, trainset=..., valset=...)

The simulated LM answers an arithmetic question right with a higher probability when the
instructions carry one of :data:`~dspex.testing.task.SECRET_PHRASES` (``SECRET_PHRASE_BONUS``, see
:mod:`dspex.testing.task`). The phrase of a task is :func:`~dspex.testing.task.secret_phrase` of
its seed, and the only place it appears is the feedback of this metric for a wrong answer::

    wrong: expected 375, got 371. Instructions that say "mind the carried digits" do better.

The simulated LM, as a reflection LM, copies a phrase it reads that way into its new instruction
(:mod:`dspex.testing._reflect`); from scores alone it never writes one. Its other revisions are
drawn from what the reflection is shown (the instruction and the examples' feedback), not from the
wording of the proposer's prompt, so two GEPA implementations that make the same decisions propose
the same texts. So GEPA with this metric
finds the phrase and beats zero-shot, and GEPA with :func:`score_metric` at the same budget does
not find it. Deterministic: the phrase depends on the seed only, the answers on the requests only.

:func:`feedback_metric` (seed 0) and :func:`score_metric` are importable by name, for a cluster job that
names its metric as ``dspex.testing.gepa_task:feedback_metric``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dspex.primitives import Example, Prediction
from dspex.testing.task import secret_phrase

__all__ = ["feedback_metric", "phrase_feedback_metric", "score_metric"]

FeedbackMetric = Callable[..., Prediction]


def _answer(pred: Any) -> str:
    value = pred.get("answer") if hasattr(pred, "get") else getattr(pred, "answer", None)
    return str(value).strip()


def score_metric(
    gold: Example, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> float:
    """1.0 when the answer is the label, else 0.0 (no feedback: the score-only run)."""
    return float(_answer(pred) == str(gold.answer))


def phrase_feedback_metric(seed: int = 0) -> FeedbackMetric:
    """The feedback metric of the task with this seed (see the module)."""
    phrase = secret_phrase(seed)

    def metric(
        gold: Example, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
    ) -> Prediction:
        got = _answer(pred)
        if got == str(gold.answer):
            return Prediction(score=1.0, feedback="correct.")
        feedback = f'wrong: expected {gold.answer}, got {got}. Instructions that say "{phrase}" do better.'
        return Prediction(score=0.0, feedback=feedback)

    metric.__name__ = f"phrase_feedback_metric_{seed}"
    return metric


_SEED_0 = phrase_feedback_metric(0)


def feedback_metric(
    gold: Example, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> Prediction:
    """The feedback metric of the seed-0 task (importable by name, for cluster jobs)."""
    return _SEED_0(gold, pred, trace, pred_name, pred_trace)
