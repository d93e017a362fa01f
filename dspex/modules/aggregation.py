"""``majority``: the most common answer among several completions (self-consistency).

pred = Predict("question -> answer", n=5)(question="...")   # five completions
voted = majority(pred)                                       # the last output field, normalized
voted.answer

preds = await Parallel().acall([(cot, {"question": q, "config": {"rollout_id": i}}) for i in range(5)])
majority(preds)                                              # a list of predictions votes too
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.errors import InputError
from dspex.metrics import normalize_text
from dspex.primitives import Completions, Example, Prediction

__all__ = ["default_normalize", "majority"]

Normalize = Callable[[Any], Any]
Votes = Prediction | Completions | Sequence[Example | Mapping[str, Any]]


def default_normalize(value: Any) -> str | None:
    """DSPy's normalization of an answer (case, punctuation, articles, spaces); None when nothing is left."""
    return normalize_text(str(value)) or None


def majority(
    prediction_or_completions: Votes,
    normalize: Normalize | None = default_normalize,
    field: str | None = None,
) -> Prediction:
    """The first completion whose ``field`` value (normalized) is the most common one.

    Takes a prediction (its ``completions``), a :class:`~dspex.Completions`, or a list of
    predictions or dicts. ``field`` defaults to the signature's last output field, else the last
    field of the first completion. Completions whose value normalizes to None do not vote, unless
    none votes. Ties go to the value seen first. ``normalize=None`` compares raw values. The result
    is a prediction holding that one completion (``result.completions[0]``).
    """
    completions, signature = _completions_of(prediction_or_completions)
    name = field or _default_field(completions, signature)
    norm = normalize or (lambda value: value)
    keys = [norm(_value(completion, name, index)) for index, completion in enumerate(completions)]
    voting = [key for key in keys if key is not None] or keys
    counts: dict[Any, int] = {}
    for key in voting:
        counts[key] = counts.get(key, 0) + 1
    winner = max(counts, key=lambda key: counts[key])  # max keeps the first of equal counts
    chosen = completions[keys.index(winner)]
    return Prediction.from_completions([chosen], signature=signature)


def _completions_of(votes: Votes) -> tuple[list[Example | Mapping[str, Any]], Any]:
    signature = None
    if isinstance(votes, Prediction):
        signature = votes.completions.signature if votes.completions is not None else None
        votes = votes.completions if votes.completions is not None else [votes]
    elif isinstance(votes, Completions):
        signature = votes.signature
    elif isinstance(votes, Mapping | Example) or not isinstance(votes, Sequence):
        raise InputError(
            "majority() takes a prediction, a Completions or a list of predictions or dicts, "
            f"got {type(votes).__name__}"
        )
    completions = list(votes)
    if not completions:
        raise InputError("majority() needs at least one prediction")
    if any(not isinstance(c, Mapping | Example) for c in completions):
        raise InputError("majority() takes predictions or dicts")
    return completions, signature


def _default_field(completions: list[Example | Mapping[str, Any]], signature: Any) -> str:
    outputs = getattr(signature, "output_fields", None)
    if outputs:
        return str(list(outputs)[-1])
    return list(completions[0].keys())[-1]


def _value(completion: Example | Mapping[str, Any], name: str, index: int) -> Any:
    if name not in completion:
        raise InputError(f"completion #{index} has no field {name!r}; it has {list(completion.keys())}")
    return completion[name]
