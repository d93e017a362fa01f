"""Two evaluations side by side on the same examples: score delta, McNemar's paired test, flips.

An example *passes* when its score is at least ``threshold`` (0.5 by default: for a 0/1 metric,
right or wrong). Over the examples both evaluations scored, ``b`` counts those only the first
passed and ``c`` those only the second passed. McNemar's test asks whether ``b`` and ``c`` differ
more than chance would make them: with fewer than 25 discordant pairs by the exact two-sided
binomial test (``b`` of ``b + c`` at p = 1/2), else by the chi-square statistic with continuity
correction, ``(|b - c| - 1)^2 / (b + c)``, on one degree of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from dspex.schemas.results import ScoreRecord

__all__ = ["EXACT_BELOW", "chi2_sf_1df", "compare_scores", "mcnemar"]

EXACT_BELOW = 25
"""Discordant pairs under which the exact binomial test is used."""


def mcnemar(b: int, c: int) -> dict[str, Any]:
    """McNemar's test for discordant counts ``b`` and ``c``: ``{method, statistic, p_value}``."""
    n = b + c
    if n == 0:
        return {"method": "exact", "statistic": 0.0, "p_value": 1.0}
    if n < EXACT_BELOW:
        tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
        return {"method": "exact", "statistic": float(min(b, c)), "p_value": min(1.0, 2.0 * tail)}
    statistic = (abs(b - c) - 1) ** 2 / n
    return {"method": "chi2-cc", "statistic": statistic, "p_value": chi2_sf_1df(statistic)}


def chi2_sf_1df(x: float) -> float:
    """P(X >= x) for X chi-square with one degree of freedom (X is a squared standard normal)."""
    return math.erfc(math.sqrt(max(x, 0.0) / 2.0))


def compare_scores(
    a: Iterable[ScoreRecord], b: Iterable[ScoreRecord], threshold: float = 0.5
) -> dict[str, Any]:
    """Pair two candidates' records by example index: means, delta, McNemar, flipped examples."""
    first = {record.example_index: record for record in a}
    second = {record.example_index: record for record in b}
    shared = sorted(first.keys() & second.keys())
    only_a = only_b = 0
    flips = []
    for index in shared:
        passed_a, passed_b = first[index].score >= threshold, second[index].score >= threshold
        if passed_a == passed_b:
            continue
        only_a, only_b = only_a + passed_a, only_b + passed_b
        flips.append(
            {
                "example_index": index,
                "score_a": first[index].score,
                "score_b": second[index].score,
                "direction": "lost" if passed_a else "gained",
            }
        )
    mean_a = _mean(first[index].score for index in shared)
    mean_b = _mean(second[index].score for index in shared)
    return {
        "paired": len(shared),
        "unpaired_a": len(first) - len(shared),
        "unpaired_b": len(second) - len(shared),
        "threshold": threshold,
        "score_a": mean_a,
        "score_b": mean_b,
        "delta": round(mean_b - mean_a, 2) if mean_a is not None and mean_b is not None else None,
        "only_a_passed": only_a,
        "only_b_passed": only_b,
        "mcnemar": mcnemar(only_a, only_b),
        "flipped": flips,
    }


def _mean(scores: Iterable[float]) -> float | None:
    """100 x the mean, rounded as evaluation scores are (None for no scores)."""
    values = list(scores)
    return round(100.0 * math.fsum(values) / len(values), 2) if values else None
