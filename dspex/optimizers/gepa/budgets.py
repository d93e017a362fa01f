"""GEPA's budgets: DSPy's metric-call budget for ``auto``, and dspex's LM-call / USD cap.

    max_metric_calls = metric_call_budget(auto="light", num_components=2, train_size=40, val_size=20)

The metric-call budget is the number of program runs scored by the metric that ``gepa`` may make:
DSPy 3.4.1's numbers exactly (the same ``auto``, valset size and number of predictors give the
same budget). The LM-call and USD cap is dspex's: every LM call of the run counts, the reflection
LM's included, and the run stops cleanly at the cap with the best program so far.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from dspex.errors import ConfigurationError
from dspex.lm.usage import Usage, UsageTracker
from dspex.optimizers.budget import Budget

__all__ = [
    "AUTO_RUN_SETTINGS",
    "AutoBudget",
    "SpendStopper",
    "auto_budget",
    "check_budget_choice",
    "metric_call_budget",
]

AutoBudget = Literal["light", "medium", "heavy"]

# The number of candidates each preset plans for (DSPy's table).
AUTO_RUN_SETTINGS: dict[str, dict[str, int]] = {
    "light": {"n": 6},
    "medium": {"n": 12},
    "heavy": {"n": 18},
}


def auto_budget(
    num_preds: int,
    num_candidates: int,
    valset_size: int,
    minibatch_size: int = 35,
    full_eval_steps: int = 5,
) -> int:
    """Metric calls for a search over ``num_candidates`` candidates of a ``num_preds``-predictor
    program: one full valset evaluation of the seed, up to 5 bootstrap runs per candidate, the
    minibatch trials, and a full valset evaluation every ``full_eval_steps`` trials."""
    trials = int(max(4 * num_preds * math.log2(num_candidates), 1.5 * num_candidates))
    if trials < 0 or valset_size < 0 or minibatch_size < 0:
        raise ConfigurationError("num_trials, valset_size and minibatch_size must be >= 0")
    if full_eval_steps < 1:
        raise ConfigurationError("full_eval_steps must be >= 1")
    total = valset_size + 5 * num_candidates + trials * minibatch_size
    if trials == 0:
        return total
    full_evals = (trials + 1) // full_eval_steps + 1
    if trials < full_eval_steps:
        full_evals += 1  # a short search still ends with one full evaluation
    return total + full_evals * valset_size


def check_budget_choice(auto: Any, max_full_evals: Any, max_metric_calls: Any) -> None:
    """Exactly one of the three budgets, each of the right kind (ConfigurationError otherwise)."""
    given = {
        "auto": auto,
        "max_full_evals": max_full_evals,
        "max_metric_calls": max_metric_calls,
    }
    chosen = [name for name, value in given.items() if value is not None]
    if len(chosen) != 1:
        shown = ", ".join(f"{name}={value!r}" for name, value in given.items())
        raise ConfigurationError(
            f"GEPA needs exactly one of auto, max_full_evals, max_metric_calls; got {shown}"
        )
    if auto is not None and auto not in AUTO_RUN_SETTINGS:
        raise ConfigurationError(
            f"auto must be one of {', '.join(map(repr, AUTO_RUN_SETTINGS))}, got {auto!r}"
        )
    for name in ("max_full_evals", "max_metric_calls"):
        value = given[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")


def metric_call_budget(
    *,
    auto: str | None,
    max_full_evals: int | None,
    max_metric_calls: int | None,
    num_components: int,
    train_size: int,
    val_size: int | None,
) -> int:
    """The ``max_metric_calls`` gepa gets. ``val_size`` is None when no valset was given."""
    if auto is not None:
        return auto_budget(
            num_preds=max(num_components, 1),
            num_candidates=AUTO_RUN_SETTINGS[auto]["n"],
            valset_size=train_size if val_size is None else val_size,
        )
    if max_full_evals is not None:
        # A "full evaluation" here is one pass over train and val together, as DSPy counts it.
        return max_full_evals * (train_size + (val_size or 0))
    assert max_metric_calls is not None  # check_budget_choice ran at construction
    return max_metric_calls


class SpendStopper:
    """A gepa stop condition over dspex's LM-call / USD budget, fed by a usage tracker.

    gepa asks it before each iteration; the adapter asks :meth:`exhausted` before starting an
    evaluation, so spend stays within the cap plus what was already in flight.
    """

    def __init__(self, budget: Budget, tracker: UsageTracker) -> None:
        self.budget = budget
        self.tracker = tracker

    @property
    def capped(self) -> bool:
        """Whether there is an LM-call or USD cap (without one, :meth:`exhausted` is always None)."""
        return self.budget.max_lm_calls is not None or self.budget.max_cost_usd is not None

    def exhausted(self) -> str | None:
        """Why no new work may start, or None while there is budget left."""
        self.budget.spent = self.tracker.usage
        return self.budget.exhausted()

    def add_remote(self, usage: Usage) -> None:
        """Count calls a remote executor's workers made (their results carry the usage)."""
        self.tracker.add(usage)

    def __call__(self, gepa_state: Any) -> bool:
        return self.exhausted() is not None
