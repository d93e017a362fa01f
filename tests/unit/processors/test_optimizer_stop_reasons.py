"""The optimizer coordinator's typed stop reasons (``OptimizeStatus.stop_reason``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dspex.errors import (
    ConfigurationError,
    DspexError,
    JobError,
    LMAuthenticationError,
    LMServerError,
    MetricError,
    OptimizerError,
)
from dspex.lm.usage import Usage
from dspex.optimizers.budget import Budget
from dspex.processors.optimizer import budget_stop, failure_stop


def run(stopped: str | None, budget: Budget) -> Any:
    return SimpleNamespace(history=SimpleNamespace(stopped=stopped), budget=budget)


def spent(calls: int, cost: float, **limits: Any) -> Budget:
    budget = Budget(**limits)
    budget.charge(Usage(lm_calls=calls, cost_usd=cost))
    return budget


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (spent(100, 0.5, max_lm_calls=100), "max_lm_calls"),
        (spent(40, 1.0, max_cost_usd=1.0), "max_cost"),
        (spent(100, 0.2, max_lm_calls=100, max_cost_usd=1.0), "max_lm_calls"),  # the one used up
        (spent(30, 1.0, max_lm_calls=100, max_cost_usd=1.0), "max_cost"),
        (spent(0, 0.0, max_lm_calls=0), "max_lm_calls"),
    ],
)
def test_a_run_a_budget_stopped_names_the_budget_that_bound(budget: Budget, expected: str) -> None:
    assert budget_stop(run(budget.exhausted() or "budget: evaluated 3 of 8 candidates", budget)) == expected


def test_a_run_that_ran_to_its_end_or_reached_its_score_has_no_stop_reason() -> None:
    budget = spent(10, 0.1, max_lm_calls=100)
    assert budget_stop(run(None, budget)) is None
    assert budget_stop(run("stop_at_score: 95.00 >= 90", budget)) is None


@pytest.mark.parametrize(
    ("error", "begun", "expected"),
    [
        (ConfigurationError("unknown optimizer 'x'"), False, "invalid_submit"),
        (MetricError("no metric 'y'"), False, "invalid_submit"),
        (OptimizerError("too many", reason="11 errors"), True, "max_errors"),
        (LMAuthenticationError("bad key", status=401), True, "systemic"),
        (ConfigurationError("no LM"), True, "systemic"),
        (LMServerError("503", status=503), True, None),
        (JobError("job x cancelled", job_id="x", state="cancelled"), True, None),
    ],
)
def test_a_failed_optimization_names_why(error: DspexError, begun: bool, expected: str | None) -> None:
    assert failure_stop(error, begun=begun) == expected
