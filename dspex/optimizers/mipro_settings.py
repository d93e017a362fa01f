"""MIPROv2's run settings: what ``auto`` resolves to, the trial schedule, and the knob checks.

    plan = resolve_run(auto="light", num_candidates=None, num_trials=None, num_predictors=1,
                       zero_shot=False, train_size=40, val_size=200, rng=random.Random(9))
    plan.num_trials, plan.num_instruct_candidates, plan.num_fewshot_candidates, plan.val_indices

The numbers are DSPy 3.4.1's for the same setting (they decide how many LM calls a run makes):

- ``auto``: ``n`` candidates (6 light, 12 medium, 18 heavy) and a validation set of at most 100,
  300 or 1000 examples drawn at random from the one given; minibatches only when that set has more
  than 50 examples. ``n`` demo sets, and ``n // 2`` instructions per predictor (``n`` when the
  optimization is zero-shot: no demos at all).
- trials: ``int(max(2 * v * log2(n), 1.5 * n))`` where ``v`` is the number of predictors, doubled
  when demos are searched too.
- with minibatches, a full evaluation of the best-averaging untried combination after every
  ``minibatch_full_eval_steps`` minibatch trials and after the last one (see :func:`trial_schedule`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from dspex.errors import ConfigurationError

__all__ = [
    "AUTO_RUN_SETTINGS",
    "MIN_MINIBATCH_VALSET",
    "AutoMode",
    "RunPlan",
    "ScheduledTrial",
    "batches",
    "check_auto_knobs",
    "check_minibatch",
    "check_trials_per_step",
    "resolve_run",
    "search_steps",
    "split_valset",
    "trial_schedule",
    "trials_for",
]

AutoMode = Literal["light", "medium", "heavy"]

# candidates ``n`` and the largest validation set, per auto mode
AUTO_RUN_SETTINGS: dict[str, tuple[int, int]] = {
    "light": (6, 100),
    "medium": (12, 300),
    "heavy": (18, 1000),
}
# With auto, a validation set larger than this is evaluated on minibatches.
MIN_MINIBATCH_VALSET = 50
# Without a valset, the last 80% of the trainset (at most this many) becomes the valset.
MAX_SPLIT_VALSET = 1000


@dataclass(frozen=True)
class RunPlan:
    """How many of everything a run makes. ``val_indices`` index the valset as given."""

    num_trials: int
    num_instruct_candidates: int
    num_fewshot_candidates: int
    minibatch: bool
    val_indices: tuple[int, ...]


def trials_for(num_predictors: int, num_candidates: int, *, zero_shot: bool) -> int:
    """The number of (minibatch) trials for ``num_candidates`` candidates per variable."""
    variables = num_predictors * (1 if zero_shot else 2)  # an instruction, and a demo set unless zero-shot
    return int(max(2 * variables * math.log2(num_candidates), 1.5 * num_candidates))


def check_auto_knobs(auto: str | None, num_candidates: int | None, num_trials: int | None) -> None:
    """DSPy's rules: ``auto`` sets both counts; without it both must be given."""
    if auto is not None and auto not in AUTO_RUN_SETTINGS:
        raise ConfigurationError(f"auto must be one of {sorted(AUTO_RUN_SETTINGS)} or None, got {auto!r}")
    if auto is not None and (num_candidates is not None or num_trials is not None):
        raise ConfigurationError(
            f"auto={auto!r} sets num_candidates and num_trials itself; give auto=None to set them "
            "(both), or leave them out"
        )
    if auto is None and num_candidates is None:
        raise ConfigurationError("with auto=None, num_candidates must be given (and num_trials)")
    if auto is None and num_trials is None:
        raise ConfigurationError(
            f"with auto=None, num_trials must be given too (for num_candidates={num_candidates}, "
            "about int(max(2 * variables * log2(num_candidates), 1.5 * num_candidates)) trials)"
        )


def split_valset(train_size: int, has_valset: bool) -> tuple[int, int]:
    """``(train_size, val_size)`` after DSPy's split of a trainset given without a valset."""
    if train_size < 1:
        raise ConfigurationError("trainset is empty; MIPROv2 needs training examples")
    if has_valset:
        return train_size, 0
    if train_size < 2:
        raise ConfigurationError(
            "trainset needs at least 2 examples when no valset is given (one to validate)"
        )
    val = min(MAX_SPLIT_VALSET, max(1, int(train_size * 0.80)))
    return train_size - val, val


def resolve_run(
    *,
    auto: str | None,
    num_candidates: int | None,
    num_trials: int | None,
    minibatch: bool,
    num_predictors: int,
    zero_shot: bool,
    val_size: int,
    rng: random.Random,
) -> RunPlan:
    """The run's counts and validation subset (draws from ``rng`` exactly when DSPy draws)."""
    check_auto_knobs(auto, num_candidates, num_trials)
    if auto is None:
        if num_candidates is None or num_trials is None:  # not after the check: this narrows the types
            raise ConfigurationError("with auto=None, num_candidates and num_trials must be given")
        return RunPlan(num_trials, num_candidates, num_candidates, minibatch, tuple(range(val_size)))
    n, largest = AUTO_RUN_SETTINGS[auto]
    indices = tuple(rng.sample(range(val_size), min(largest, val_size)))
    return RunPlan(
        num_trials=trials_for(num_predictors, n, zero_shot=zero_shot),
        num_instruct_candidates=n if zero_shot else int(n * 0.5),
        num_fewshot_candidates=n,
        minibatch=len(indices) > MIN_MINIBATCH_VALSET,
        val_indices=indices,
    )


@dataclass(frozen=True)
class ScheduledTrial:
    """One trial of the search: its number (the default program is 0) and whether it is a full
    evaluation of the best-averaging combination so far (else a trial the sampler chooses)."""

    number: int
    full: bool


def trial_schedule(num_trials: int, *, minibatch: bool, full_eval_steps: int) -> list[ScheduledTrial]:
    """Every trial after the default program's, in order.

    Without minibatches: ``num_trials`` sampled trials, each a full evaluation. With them: the
    sampled trials are numbered from 1; after the one numbered ``k`` comes a full evaluation when
    ``k + 1`` is a multiple of ``full_eval_steps + 1`` or when it is the last trial (each full
    evaluation takes a number too), so the total is DSPy's ``adjusted_num_trials``.
    """
    if not minibatch:
        return [ScheduledTrial(number, full=False) for number in range(1, num_trials + 1)]
    extra_at_end = 1 if num_trials % full_eval_steps else 0
    total = num_trials + num_trials // full_eval_steps + 1 + extra_at_end
    schedule: list[ScheduledTrial] = []
    number = 1
    for _ in range(num_trials):
        schedule.append(ScheduledTrial(number, full=False))
        if (number + 1) % (full_eval_steps + 1) == 0 or number + 1 == total - 1:
            schedule.append(ScheduledTrial(number + 1, full=True))
            number += 1
        number += 1
    return schedule


def check_minibatch(minibatch: bool, minibatch_size: int, val_size: int) -> None:
    if minibatch and minibatch_size > val_size:
        raise ConfigurationError(
            f"minibatch_size={minibatch_size} exceeds the validation set ({val_size} examples); "
            "lower it, give a larger valset, or pass minibatch=False"
        )


def batches(
    schedule: Sequence[ScheduledTrial],
    size: int,
    *,
    full_alone: bool = False,
    alone_from: int | None = None,
    join_last_full: bool = False,
) -> list[list[ScheduledTrial]]:
    """The schedule cut into steps of at most ``size`` sampled trials, a full evaluation opening a
    step of its own (the combination it evaluates is chosen from the minibatches of earlier steps,
    so it can run together with the trials after it). With ``full_alone`` a full evaluation is a
    step by itself, so that no step holds more than one trial when ``size`` is 1. Every trial
    numbered ``alone_from`` or more opens a step (the sampler must be told every earlier score
    before it is asked). With ``join_last_full``, a last trial that is a full evaluation closes the
    step before it when that step is one sampled trial (see :func:`search_steps`)."""
    steps: list[list[ScheduledTrial]] = []
    current: list[ScheduledTrial] = []
    for trial in schedule:
        sampled = sum(not t.full for t in current)
        after_full = bool(current) and full_alone and current[-1].full
        alone = alone_from is not None and trial.number >= alone_from
        if current and (trial.full or sampled == size or after_full or alone):
            steps.append(current)
            current = []
        current.append(trial)
    steps.extend([current] if current else [])
    last = steps[-1] if steps else []
    if join_last_full and len(steps) > 1 and last[0].full and len(steps[-2]) == 1 and not steps[-2][0].full:
        steps[-2:] = [steps[-2] + last]
    return steps


def check_trials_per_step(value: object) -> int | None:
    """``trials_per_step``: None (a step per ``minibatch_full_eval_steps`` trials) or an int >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"trials_per_step must be an integer >= 1 or None, got {value!r} (1: a checkpoint after "
            "every trial; larger: more trials evaluated at once)"
        )
    return value


def search_steps(
    schedule: Sequence[ScheduledTrial],
    *,
    full_eval_steps: int,
    trials_per_step: int | None,
    modelled_from: int,
) -> list[list[ScheduledTrial]]:
    """The search's steps.

    ``trials_per_step=None`` (the default): the choices DSPy's one-trial-at-a-time loop makes, in
    fewer steps. The sampler draws at random for the trials numbered below ``modelled_from`` (TPE's
    startup trials), so those are asked and evaluated ``full_eval_steps`` at a time; from
    ``modelled_from`` on, TPE models the scores told, so each trial opens a step, asked once every
    earlier score is told, as in DSPy. The last full evaluation closes the step of the one trial
    before it: it can only choose that trial's combination or the best untried one before it, and
    both are evaluated with the trial (one full evaluation spent to save a round of requests).

    An int: that many sampled trials per step throughout (larger is faster; the sampler is told
    fewer scores before a batch, so it can choose otherwise). A full evaluation shares its step
    with the sampled trials after it, except with ``trials_per_step=1``: then it is a step of its
    own, so a crash never loses more than one trial's work.
    """
    if trials_per_step is None:
        return batches(schedule, full_eval_steps, alone_from=modelled_from, join_last_full=True)
    return batches(schedule, trials_per_step, full_alone=trials_per_step == 1)
