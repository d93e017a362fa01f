"""GEPA's metric-call budgets are DSPy 3.4.1's, number for number; bad budget choices fail early."""

from __future__ import annotations

import dspy
import pytest

from dspex.errors import ConfigurationError
from dspex.optimizers.gepa.budgets import (
    AUTO_RUN_SETTINGS,
    auto_budget,
    check_budget_choice,
    metric_call_budget,
)


def _dspy_gepa() -> dspy.GEPA:
    return dspy.GEPA(
        metric=lambda g, p, t=None, n=None, pt=None: 0.0, auto="light", reflection_lm=dspy.LM("x/y")
    )


@pytest.mark.parametrize("auto", sorted(AUTO_RUN_SETTINGS))
@pytest.mark.parametrize("num_preds", [1, 2, 5])
@pytest.mark.parametrize("valset_size", [0, 1, 7, 35, 200])
def test_auto_budget_matches_dspy(auto: str, num_preds: int, valset_size: int) -> None:
    n = AUTO_RUN_SETTINGS[auto]["n"]
    assert dspy.teleprompt.gepa.gepa.AUTO_RUN_SETTINGS[auto]["n"] == n
    assert auto_budget(num_preds, n, valset_size) == _dspy_gepa().auto_budget(num_preds, n, valset_size)


@pytest.mark.parametrize(
    ("num_candidates", "minibatch", "steps"), [(2, 3, 5), (3, 1, 10), (6, 0, 1), (12, 35, 7)]
)
def test_auto_budget_matches_dspy_off_the_presets(num_candidates: int, minibatch: int, steps: int) -> None:
    ours = auto_budget(1, num_candidates, 10, minibatch, steps)
    assert ours == _dspy_gepa().auto_budget(1, num_candidates, 10, minibatch, steps)


def test_metric_call_budget_for_each_choice() -> None:
    common = {"num_components": 2, "train_size": 20}
    assert metric_call_budget(
        auto="medium", max_full_evals=None, max_metric_calls=None, val_size=8, **common
    ) == (auto_budget(2, 12, 8))
    # No valset: the trainset is the valset the auto budget plans for.
    assert metric_call_budget(
        auto="light", max_full_evals=None, max_metric_calls=None, val_size=None, **common
    ) == (auto_budget(2, 6, 20))
    assert metric_call_budget(auto=None, max_full_evals=3, max_metric_calls=None, val_size=10, **common) == 90
    assert (
        metric_call_budget(auto=None, max_full_evals=3, max_metric_calls=None, val_size=None, **common) == 60
    )
    assert (
        metric_call_budget(auto=None, max_full_evals=None, max_metric_calls=77, val_size=10, **common) == 77
    )


@pytest.mark.parametrize(
    ("auto", "full", "calls", "message"),
    [
        (None, None, None, "exactly one"),
        ("light", None, 10, "exactly one"),
        ("huge", None, None, "auto must be one of"),
        (None, 0, None, "max_full_evals must be"),
        (None, None, True, "max_metric_calls must be"),
    ],
)
def test_bad_budget_choices(auto: object, full: object, calls: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_budget_choice(auto, full, calls)


def test_auto_budget_rejects_impossible_sizes() -> None:
    with pytest.raises(ConfigurationError):
        auto_budget(1, 6, -1)
    with pytest.raises(ConfigurationError):
        auto_budget(1, 6, 10, full_eval_steps=0)
