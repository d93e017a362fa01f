"""What an optimization did, step by step: for plots, status messages and checkpoints.

    best = optimizer.compile(program, trainset=train, valset=val)
    for trial in optimizer.history.trials:
        trial.step, trial.kind, trial.label, trial.score, trial.best_so_far
    optimizer.history.best_score, optimizer.history.usage, optimizer.history.stopped

A *trial* is one thing a step did: a candidate evaluated (``kind="full"``, with a score), a bootstrap
wave (``kind="bootstrap"``, no score), a step that failed (``score=None`` and ``error`` set). Several
trials may share a step (all candidates are evaluated in one step). Trials are kept in trial order,
which for candidates is candidate order, whatever order their evaluations finished in.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pydantic import ConfigDict, TypeAdapter

from dspex.lm.usage import Usage

__all__ = ["STEP_LISTENER", "Trial", "TrialHistory"]


@dataclass(frozen=True)
class Trial:
    """One entry of the history. ``best_so_far`` is the best score among this and earlier trials."""

    # validated as part of a checkpoint (dspex.optimizers.checkpoint): unknown fields are an error
    __pydantic_config__ = ConfigDict(extra="forbid")

    step: int
    kind: str
    label: str
    candidate_id: str | None = None
    score: float | None = None
    num_examples: int = 0
    best_so_far: float | None = None
    note: str | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_trial_record(self) -> dict[str, Any]:
        """The fields of :class:`dspex.schemas.TrialRecord` (the OptimizeStatus wire form)."""
        note = "; ".join(part for part in (self.label, self.note, self.error) if part)
        return {
            "step": self.step,
            "candidate_id": self.candidate_id or "",
            "score": self.score,
            "num_examples": self.num_examples,
            "kind": self.kind,
            "note": note or None,
            "error": self.error,
        }


@dataclass
class TrialHistory:
    """The trials of one optimization, in trial order, with the usage spent and why it stopped."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    optimizer: str = ""
    trials: list[Trial] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stopped: str | None = None
    best_candidate_id: str | None = None

    def add(self, trial: Trial) -> Trial:
        """Append ``trial`` with its ``best_so_far`` filled in; a better score becomes the best."""
        best = self.best_score
        if trial.score is not None and (best is None or trial.score > best):
            # strictly better: of equal scores the earlier trial stays the best (candidate order)
            best, self.best_candidate_id = trial.score, trial.candidate_id
        recorded = replace(trial, best_so_far=best)
        self.trials.append(recorded)
        return recorded

    @property
    def best_score(self) -> float | None:
        """The highest score of any trial (None before the first scored one)."""
        return self.trials[-1].best_so_far if self.trials else None

    @property
    def scores(self) -> list[float | None]:
        """The score of each trial, in trial order (None for a trial without one)."""
        return [trial.score for trial in self.trials]

    @property
    def best_so_far(self) -> list[float | None]:
        """The running best after each trial, for plots."""
        return [trial.best_so_far for trial in self.trials]

    def to_dict(self) -> dict[str, Any]:
        """The history as JSON data (the form checkpoints hold it in)."""
        data: dict[str, Any] = _HISTORY.dump_python(self, mode="json")
        return data

    def __repr__(self) -> str:
        return (
            f"TrialHistory({self.optimizer}: {len(self.trials)} trials, best={self.best_score}, "
            f"lm_calls={self.usage.lm_calls}, stopped={self.stopped!r})"
        )


_HISTORY: TypeAdapter[TrialHistory] = TypeAdapter(TrialHistory)


# Hears a run's history after each of its steps in this context (a compile's MLflow run logs its
# trials live through it); None: nobody. A listener must not raise.
STEP_LISTENER: contextvars.ContextVar[Callable[[TrialHistory], None] | None] = contextvars.ContextVar(
    "dspex_step_listener", default=None
)
