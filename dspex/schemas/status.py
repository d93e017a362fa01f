"""Values of the status topic (key: job_id, compacted; one writer per job)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from dspex.schemas.base import Message, Timestamp, WireModel, known_or_none, utc_now
from dspex.schemas.common import UsageRecord

__all__ = [
    "LIMIT_STOP_REASONS",
    "TERMINAL_STATES",
    "CandidateAggregate",
    "JobState",
    "JobStatus",
    "OptimizeStatus",
    "OptimizeStopReason",
    "StatusMessage",
    "StopReason",
    "TrialRecord",
    "over_cost_budget",
]

JobState = Literal["pending", "running", "completed", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

StopReason = Literal["systemic", "max_errors", "max_cost", "cancelled", "tasks_missing", "invalid_submit"]
"""Why an evaluation ended other than by completing, as its writer decided it.

``systemic``: an error every task would repeat (a 401, an unknown model, a program the workers
cannot build); ``max_errors`` / ``max_cost``: the job's own limits (partial results stand);
``cancelled``: a Cancel; ``tasks_missing``: the submitter could not publish all the tasks;
``invalid_submit``: the job's record on the jobs topic does not decode.
"""

OptimizeStopReason = Literal[
    "max_lm_calls", "max_cost", "max_errors", "systemic", "cancelled", "invalid_submit"
]
"""Why an optimization stopped: its budget (``max_lm_calls``, ``max_cost``: it completes with the best
program so far), or, when it failed or was cancelled, ``max_errors``, ``systemic``, ``cancelled``,
``invalid_submit`` (the job cannot be run as given: optimizer, knobs, examples, student)."""

LIMIT_STOP_REASONS: frozenset[str] = frozenset({"max_errors", "max_cost"})
"""The stop reasons of an evaluation that leave partial results (``stopped_early``), not an error."""


def over_cost_budget(cost_usd: float, max_cost_usd: float | None) -> bool:
    """Whether ``cost_usd`` is over the budget: the ONE comparison the aggregator and clients use.

    Strictly over: a job that spent exactly its budget is within it (as ``max_errors`` allows
    exactly that many errors).
    """
    return max_cost_usd is not None and cost_usd > max_cost_usd


class CandidateAggregate(WireModel):
    """Running totals for one candidate of an evaluation.

    ``score_sum`` is the exact sum of the scores counted so far (the writer sums with
    ``math.fsum``), failures included at the job's failure score, so ``score`` keeps DSPy's
    meaning: 100 x mean with failures in the denominator.
    """

    candidate_id: str
    total: int = Field(ge=0, description="Examples this candidate is evaluated on.")
    done: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)
    score_sum: float = 0.0
    usage: UsageRecord = Field(default_factory=UsageRecord)

    @property
    def score(self) -> float:
        """100 x the mean score over the examples done so far (0 when none is), rounded to 2 decimals
        as local ``Evaluate`` (and DSPy) round it."""
        return round(100.0 * self.score_sum / self.done, 2) if self.done else 0.0


class JobStatus(Message):
    """Where an evaluation stands, written by the aggregator (at once on completion, else every second).

    A terminal status may be followed by others of the same state whose ``usage`` (and ``seq``,
    ``updated_at``) alone changed: LM calls of runs that reported after the end are charged too.
    The latest status holds the job's final cost.
    """

    kind: Literal["eval"] = "eval"
    job_id: str
    name: str | None = None
    parent_job_id: str | None = Field(default=None, description="The optimization it is part of.")
    state: JobState
    total_tasks: int = Field(ge=0)
    done: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)
    candidates: list[CandidateAggregate] = Field(default_factory=list)
    usage: UsageRecord = Field(default_factory=UsageRecord)
    seq: int = Field(default=0, ge=0, description="Increases with every status the writer sends.")
    started_at: Timestamp | None = None
    updated_at: Timestamp = Field(default_factory=utc_now)
    finished_at: Timestamp | None = None
    reason: str | None = Field(default=None, description="Why the job failed or was cancelled.")
    stop_reason: StopReason | None = Field(
        default=None,
        description="Why the job ended other than by completing (absent: completed, running, or "
        "written by an aggregator older than schema 1.1). Readers treat a value they do not know "
        "as absent.",
    )

    note: str | None = Field(
        default=None,
        description="How the job runs where it differs from what was asked, e.g. an in-flight budget "
        "(num_threads) clamped to what the predictors allow.",
    )

    usage_unreported: UsageRecord | None = Field(
        default=None,
        description="LM calls (and their tokens and cost) the job may have spent that ``usage`` does "
        "not hold: what predictors that died without stopping in order (kill -9, a lost machine) had "
        "answered but not yet reported, as their last heartbeat (at most ~2 s before the death) said. "
        "Not a charge: calls reported after that heartbeat are counted here too; calls answered "
        "after it are missing. Absent: no such death, or a writer older than schema 1.3.",
    )

    SCHEMA_VERSION: ClassVar[str] = "1.3"  # 1.1: stop_reason; 1.2: note; 1.3: usage_unreported

    _stop_reason_tolerant = field_validator("stop_reason", mode="wrap")(known_or_none)

    @property
    def finished(self) -> bool:
        """Whether the job reached a terminal state."""
        return self.state in TERMINAL_STATES

    def candidate(self, candidate_id: str) -> CandidateAggregate | None:
        """The aggregate of one candidate, if the job has it."""
        return next((c for c in self.candidates if c.candidate_id == candidate_id), None)

    @property
    def unreported_note(self) -> str | None:
        """What readers say about ``usage_unreported`` (None: nothing to say)."""
        return _unreported_note(self.usage_unreported, "a predictor died")


class TrialRecord(WireModel):
    """One step of an optimization: a candidate evaluated, and how."""

    step: int = Field(ge=0)
    candidate_id: str
    score: float | None = Field(default=None, description="0-100; None when the evaluation failed.")
    num_examples: int = Field(ge=0)
    kind: str = Field(default="full", description='"full" or "minibatch" (open set of strings).')
    eval_job_id: str | None = None
    note: str | None = None
    error: str | None = Field(default=None, description="Why this step failed (None: it did not).")


class OptimizeStatus(Message):
    """Where an optimization stands, written by the optimizer coordinator after every step."""

    kind: Literal["optimize"] = "optimize"
    job_id: str
    name: str | None = None
    state: JobState
    optimizer: str
    steps: list[TrialRecord] = Field(default_factory=list)
    best_candidate_id: str | None = None
    best_score: float | None = None
    usage: UsageRecord = Field(default_factory=UsageRecord)
    seq: int = Field(default=0, ge=0)
    started_at: Timestamp | None = None
    updated_at: Timestamp = Field(default_factory=utc_now)
    finished_at: Timestamp | None = None
    reason: str | None = None
    stop_reason: OptimizeStopReason | None = Field(
        default=None,
        description="Why the optimization stopped early: its budget (completed with the best program "
        "so far) or why it failed or was cancelled (absent: ran to its end, or an older writer). "
        "Readers treat a value they do not know as absent.",
    )

    usage_unreported: UsageRecord | None = Field(
        default=None,
        description="LM calls (and their tokens and cost) the optimization may have spent that "
        "``usage`` does not hold: what optimize workers killed mid-step (kill -9) had spent on the "
        "step they never checkpointed, as their last heartbeat said (the step was redone by the next "
        "owner). Not a charge: calls answered after that heartbeat are missing. Absent: no such "
        "death, or a writer older than schema 1.2.",
    )

    SCHEMA_VERSION: ClassVar[str] = "1.2"  # 1.1: stop_reason; 1.2: usage_unreported

    _stop_reason_tolerant = field_validator("stop_reason", mode="wrap")(known_or_none)

    @property
    def finished(self) -> bool:
        """Whether the optimization reached a terminal state."""
        return self.state in TERMINAL_STATES

    @property
    def unreported_note(self) -> str | None:
        """What readers say about ``usage_unreported`` (None: nothing to say)."""
        return _unreported_note(self.usage_unreported, "an optimize worker died mid-step")


StatusMessage = Annotated[JobStatus | OptimizeStatus, Field(discriminator="kind")]
"""Any value of the status topic, told apart by ``kind``."""


def _unreported_note(usage: UsageRecord | None, cause: str) -> str | None:
    if usage is None or not usage.lm_calls:
        return None
    calls = "LM call" if usage.lm_calls == 1 else "LM calls"
    return f"up to {usage.lm_calls:,} {calls} not charged: {cause}"
