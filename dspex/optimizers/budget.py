"""Budgets in LM calls and in USD: an optimizer stops cleanly at them with the best program so far.

Every optimizer takes ``max_lm_calls`` and ``max_cost_usd``. Before each step it asks the budget
how many program runs it can still afford and sizes the step to fit (a step never starts once the
budget is spent), so a run ends within one step of the limit, usually below it.

What counts: the calls sent to a provider (``Usage.lm_calls - Usage.cache_hits``: a cache hit costs
nothing and never reaches the provider) and their cost. In-process calls are measured with
:func:`dspex.track_usage` around each step; calls made elsewhere (a Kafka executor's workers) are
charged from the usage their results report. A checkpoint holds what was spent
(:class:`dspex.optimizers.checkpoint.BudgetRecord`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from dspex.errors import ConfigurationError
from dspex.lm.usage import Usage

__all__ = ["Budget"]


@dataclass
class Budget:
    """Limits and what was spent. ``runs`` counts program runs, for the cost-per-run estimate."""

    max_lm_calls: int | None = None
    max_cost_usd: float | None = None
    spent: Usage = field(default_factory=Usage)
    runs: int = 0

    def __post_init__(self) -> None:
        if self.max_lm_calls is not None and (
            isinstance(self.max_lm_calls, bool)
            or not isinstance(self.max_lm_calls, int)
            or self.max_lm_calls < 0
        ):
            raise ConfigurationError(
                f"max_lm_calls must be None or an integer >= 0, got {self.max_lm_calls!r}"
            )
        cost = self.max_cost_usd
        if cost is not None and (
            isinstance(cost, bool) or not isinstance(cost, numbers.Real) or not cost >= 0 or math.isinf(cost)
        ):
            raise ConfigurationError(f"max_cost_usd must be None or a finite number >= 0, got {cost!r}")

    @property
    def calls(self) -> int:
        """Calls sent to a provider so far (cache hits left out)."""
        return self.spent.lm_calls - self.spent.cache_hits

    def charge(self, usage: Usage, *, runs: int = 0) -> None:
        """Add what a step spent; ``runs`` is how many program runs it made."""
        self.spent = self.spent + usage
        self.runs += runs

    def exhausted(self) -> str | None:
        """Why no further step may start, or None while there is budget left."""
        if self.max_lm_calls is not None and self.calls >= self.max_lm_calls:
            return f"budget: {self.calls} LM calls made, max_lm_calls={self.max_lm_calls}"
        if self.max_cost_usd is not None and self.spent.cost_usd >= self.max_cost_usd:
            return f"budget: ${self.spent.cost_usd:.4f} spent, max_cost_usd={self.max_cost_usd}"
        return None

    def affordable_runs(self, calls_per_run: float = 1.0) -> int | None:
        """How many more program runs fit (None: no limit). ``calls_per_run`` is the guess to use
        before any run was measured (e.g. the number of predictors)."""
        limits: list[int] = []
        per_run = self.spent.lm_calls / self.runs if self.runs and self.spent.lm_calls else calls_per_run
        if self.max_lm_calls is not None:
            limits.append(math.floor((self.max_lm_calls - self.calls) / max(per_run, 1e-9)))
        if self.max_cost_usd is not None and self.runs and self.spent.cost_usd > 0:
            cost_per_run = self.spent.cost_usd / self.runs
            limits.append(math.floor((self.max_cost_usd - self.spent.cost_usd) / cost_per_run))
        return max(0, min(limits)) if limits else None
