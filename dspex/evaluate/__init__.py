"""Local evaluation (:class:`Evaluate`), DSPy's built-in answer metrics and its LM-judged metrics.

The submodules follow DSPy's layout (``dspex.evaluate.evaluate``, ``dspex.evaluate.metrics``,
``dspex.evaluate.auto_evaluation``).
"""

from __future__ import annotations

from dspex.evaluate.auto_evaluation import CompleteAndGrounded, SemanticF1
from dspex.evaluate.evaluate import DEFAULT_CONCURRENCY, Evaluate, EvaluationResult, ExampleResult
from dspex.evaluate.metrics import (
    EM,
    F1,
    HotPotF1,
    answer_exact_match,
    answer_passage_match,
    normalize_text,
)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "EM",
    "F1",
    "CompleteAndGrounded",
    "Evaluate",
    "EvaluationResult",
    "ExampleResult",
    "HotPotF1",
    "SemanticF1",
    "answer_exact_match",
    "answer_passage_match",
    "normalize_text",
]
