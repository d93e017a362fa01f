"""DSPy's answer metrics, with its names and semantics (``dspy.evaluate.metrics``).

``answer_exact_match(example, pred)`` compares ``pred.answer`` with ``example.answer`` (a string or a
list of accepted strings) after :func:`normalize_text`; ``frac < 1`` asks for a token F1 of at least
``frac`` instead. ``answer_passage_match`` asks whether any passage in ``pred.context`` contains an
accepted answer as a whole-token sequence. The field-generic metrics of :mod:`dspex.metrics`
(``exact_match("answer")``...) are what the cluster names by string; these are for DSPy code.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from dspex.errors import InputError
from dspex.metrics import normalize_text

__all__ = [
    "EM",
    "F1",
    "HotPotF1",
    "answer_exact_match",
    "answer_passage_match",
    "em_score",
    "f1_score",
    "hotpot_f1_score",
    "normalize_text",
    "precision_score",
]

_YES_NO = frozenset({"yes", "no", "noanswer"})
# Words and single non-space symbols: the tokens a passage must contain in order.
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def em_score(prediction: str, ground_truth: str) -> bool:
    """Whether the two strings are equal after :func:`normalize_text`."""
    return normalize_text(prediction) == normalize_text(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token F1 of the normalized strings (0 when they share no token, both empty included)."""
    return _f1(normalize_text(prediction).split(), normalize_text(ground_truth).split())


def precision_score(prediction: str, ground_truth: str) -> float:
    """Share of the prediction's normalized tokens that the reference has."""
    predicted = normalize_text(prediction).split()
    shared = sum((Counter(predicted) & Counter(normalize_text(ground_truth).split())).values())
    return shared / len(predicted) if shared else 0.0


def hotpot_f1_score(prediction: str, ground_truth: str) -> float:
    """HotPotQA's F1: a yes/no/noanswer on either side must match exactly, else token F1."""
    predicted, reference = normalize_text(prediction), normalize_text(ground_truth)
    if (predicted in _YES_NO or reference in _YES_NO) and predicted != reference:
        return 0.0
    return _f1(predicted.split(), reference.split())


def EM(prediction: str, answers_list: list[str]) -> bool:
    """Whether the prediction matches any accepted answer exactly (after normalization)."""
    return max(em_score(prediction, answer) for answer in _answers(answers_list))


def F1(prediction: str, answers_list: list[str]) -> float:
    """The best token F1 of the prediction against the accepted answers."""
    return max(f1_score(prediction, answer) for answer in _answers(answers_list))


def HotPotF1(prediction: str, answers_list: list[str]) -> float:
    """The best HotPotQA F1 of the prediction against the accepted answers."""
    return max(hotpot_f1_score(prediction, answer) for answer in _answers(answers_list))


def answer_exact_match(example: Any, pred: Any, trace: Any = None, frac: float = 1.0) -> bool:
    """``pred.answer`` against ``example.answer`` (one string or a list): EM, or F1 >= ``frac``."""
    answers = _accepted(example.answer, "answer_exact_match")
    if frac >= 1.0:
        return EM(pred.answer, answers)
    return F1(pred.answer, answers) >= frac


def answer_passage_match(example: Any, pred: Any, trace: Any = None) -> bool:
    """Whether any passage of ``pred.context`` contains one of ``example.answer``'s strings."""
    answers = [
        _tokens(normalize_text(answer)) for answer in _accepted(example.answer, "answer_passage_match")
    ]
    return any(_contains_any(_tokens(normalize_text(passage)), answers) for passage in pred.context)


def _f1(predicted: list[str], reference: list[str]) -> float:
    shared = sum((Counter(predicted) & Counter(reference)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(reference)
    return 2 * precision * recall / (precision + recall)


def _answers(answers_list: Any) -> list[str]:
    if not isinstance(answers_list, list):
        raise InputError(f"`answers_list` must be a list, got {type(answers_list)}")
    return answers_list


def _accepted(answer: Any, metric: str) -> list[str]:
    if isinstance(answer, str):
        return [answer]
    if isinstance(answer, list):
        return answer
    raise InputError(f"Invalid answer type: {type(answer)} ({metric} needs a str or a list of str)")


def _tokens(text: str) -> list[str]:
    return [token.lower() for token in _TOKEN.findall(unicodedata.normalize("NFD", text))]


def _contains_any(passage: Sequence[str], answers: list[list[str]]) -> bool:
    for answer in answers:
        width = len(answer)
        if width and any(passage[i : i + width] == answer for i in range(len(passage) - width + 1)):
            return True
    return False
