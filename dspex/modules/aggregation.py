"""``majority``: the most common answer among several completions (self-consistency).

preds = await Parallel().acall([(cot, {"question": q, "config": {"rollout_id": i, "temperature": 1.0}})
                                for i in range(5)])
voted = majority(preds)                    # the signature's last output field, normalized
voted.answer
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.errors import InputError
from dspex.metrics import normalize_text
from dspex.primitives import Example, Prediction

__all__ = ["default_normalize", "majority"]

Normalize = Callable[[Any], Any]


def default_normalize(value: Any) -> str | None:
    """DSPy's normalization of an answer (case, punctuation, articles, spaces); None when nothing is left."""
    return normalize_text(str(value)) or None


def majority(
    predictions_or_completions: Sequence[Example | Mapping[str, Any]],
    normalize: Normalize | None = default_normalize,
    field: str | None = None,
) -> Prediction:
    """The first completion whose ``field`` value (normalized) is the most common one.

    ``field`` defaults to the last field of the first completion (a predictor's last output).
    Completions whose value normalizes to None do not vote, unless none votes. Ties go to the value
    seen first. ``normalize=None`` compares raw values.
    """
    completions = list(predictions_or_completions)
    if not completions:
        raise InputError("majority() needs at least one prediction")
    if any(not isinstance(c, Mapping | Example) for c in completions):
        raise InputError("majority() takes predictions or dicts")
    name = field or list(completions[0].keys())[-1]
    norm = normalize or (lambda value: value)
    keys = [norm(_value(completion, name, index)) for index, completion in enumerate(completions)]
    voting = [key for key in keys if key is not None] or keys
    counts: dict[Any, int] = {}
    for key in voting:
        counts[key] = counts.get(key, 0) + 1
    winner = max(counts, key=lambda key: counts[key])  # max keeps the first of equal counts
    chosen = completions[keys.index(winner)]
    return Prediction(dict(chosen.items()))


def _value(completion: Example | Mapping[str, Any], name: str, index: int) -> Any:
    if name not in completion:
        raise InputError(f"completion #{index} has no field {name!r}; it has {list(completion.keys())}")
    return completion[name]
