"""Optimizer checkpoints as versioned models: what ``OptimizerRun.state_dict()`` writes and reads.

    data = run.state_dict()                         # JSON data: a RunCheckpoint, dumped
    optimizer.start(program, ..., state=data)       # validated; ConfigurationError when it cannot be

A checkpoint is a :class:`RunCheckpoint` (version 1): the step reached, whether the run is done, the
errors counted, the trial history, the budget spent and ``state``, the optimizer's own part, one
model per optimizer (:class:`BootstrapState`, :class:`RandomSearchState`, :class:`LabeledState`,
:class:`CoproState`, :class:`MiproState`, :class:`SimbaState`; a run names its own in
``OptimizerRun.state_model``). In JSON, sets and tuples are lists and maps keyed by integers have
text keys, so the data goes through a Kafka topic unchanged.

Reading is strict: the data is validated as JSON (a list may stand for a tuple, a text key for an
integer key, an integer for a float, nothing else is converted) and unknown fields are refused. A
checkpoint of another version, or one with a field of the wrong type, is a one-line
:class:`~dspex.errors.ConfigurationError` naming the version or the field's path and what it must be.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, with_config
from typing_extensions import TypedDict

from dspex.errors import ConfigurationError
from dspex.lm.usage import Usage
from dspex.optimizers.budget import Budget
from dspex.optimizers.copro_proposer import Scored, Setting
from dspex.optimizers.grounded import Grounding
from dspex.optimizers.history import TrialHistory
from dspex.optimizers.simba_strategies import Member

__all__ = [
    "CHECKPOINT_VERSION",
    "BestTrial",
    "BootstrapState",
    "BootstrapTaskState",
    "BudgetRecord",
    "CheckpointModel",
    "CoproPhase",
    "CoproState",
    "EvaluatedTrial",
    "LabeledState",
    "MiproPhase",
    "MiproState",
    "RandomSearchState",
    "RngState",
    "RunCheckpoint",
    "SearchState",
    "SimbaPhase",
    "SimbaState",
    "ToldTrial",
    "read_checkpoint",
    "read_state",
    "restore_rng",
    "rng_state",
]

# The checkpoint format this dspex writes and reads.
CHECKPOINT_VERSION = 1

# How many validation errors one message lists (the first is what to fix; the rest, counted).
_ERRORS_SHOWN = 2
_INPUT_SHOWN = 60

M = TypeVar("M", bound=BaseModel)

CoproPhase = Literal["propose", "evaluate"]
MiproPhase = Literal["bootstrap", "propose", "search"]
SimbaPhase = Literal["sample", "choose", "evaluate"]


class CheckpointModel(BaseModel):
    """Base of the checkpoint models: immutable, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- shared parts

# random.Random.getstate(): (version, the Mersenne Twister's 625 integers, the cached gauss or None)
RngState = tuple[int, tuple[int, ...], float | None]


def rng_state(rng: random.Random) -> RngState:
    """``rng``'s state as a checkpoint holds it."""
    version, internal, gauss = rng.getstate()
    return version, internal, gauss


def restore_rng(rng: random.Random, state: RngState) -> None:
    """Put a checkpoint's :data:`RngState` back into ``rng``."""
    rng.setstate(state)


class BudgetRecord(CheckpointModel):
    """What a run spent; the limits are written for the record (the resuming caller's limits win)."""

    max_lm_calls: int | None = None
    max_cost_usd: float | None = None
    spent: Usage = Field(default_factory=Usage)
    runs: int = Field(default=0, ge=0)

    @classmethod
    def of(cls, budget: Budget) -> BudgetRecord:
        return cls(
            max_lm_calls=budget.max_lm_calls,
            max_cost_usd=budget.max_cost_usd,
            spent=budget.spent,
            runs=budget.runs,
        )

    def restore(self, limits: Budget) -> Budget:
        """A budget with ``limits``' limits and what this record says was spent."""
        return Budget(limits.max_lm_calls, limits.max_cost_usd, spent=self.spent, runs=self.runs)


class BootstrapTaskState(CheckpointModel):
    """One :class:`~dspex.optimizers.bootstrap.BootstrapTask` (positions index its examples)."""

    opened: int = Field(ge=0)
    committed: int = Field(ge=0)
    rounds: dict[int, int]  # position -> next round to try
    passed: dict[int, dict[str, dict[str, Any]]]  # position -> demo fields by predictor path
    failed: list[int]
    accepted: list[int]
    attempts: int = Field(ge=0)
    errors: int = Field(default=0, ge=0)
    done: bool


class RunCheckpoint(CheckpointModel):
    """The envelope every optimizer writes; ``state`` is the optimizer's own model, as JSON data."""

    version: int = CHECKPOINT_VERSION
    step: int = Field(ge=0)
    done: bool
    errors: int = Field(ge=0)
    history: TrialHistory
    budget: BudgetRecord
    state: dict[str, Any]


# --------------------------------------------------------------------------- each optimizer's state


class BootstrapState(CheckpointModel):
    """BootstrapFewShot: its one bootstrap task."""

    tasks: list[BootstrapTaskState]


class RandomSearchState(CheckpointModel):
    """BootstrapFewShotWithRandomSearch: the bootstrap of each candidate seed, the best candidate."""

    tasks: dict[int, BootstrapTaskState]
    best: int | None = None


class LabeledState(CheckpointModel):
    """LabeledFewShot: nothing beyond the envelope (its one step is the evaluation)."""


class CoproState(CheckpointModel):
    """COPRO: the round and phase, each predictor's settings so far and the scores found."""

    round: int = Field(ge=0)
    phase: CoproPhase
    current: list[Setting]
    latest: list[list[Setting]]
    proposed: list[list[Setting]]
    evaluated: list[list[Scored]]
    known: dict[str, float]  # candidate id -> score
    stats: dict[str, dict[str, dict[str, list[int | float]]]]  # kind -> path -> statistic -> values
    total_calls: int = Field(ge=0)


@with_config(ConfigDict(extra="forbid"))
class ToldTrial(TypedDict):
    """A trial told to MIPROv2's search: its number, choices and score."""

    number: int
    params: dict[str, int]
    value: float


@with_config(ConfigDict(extra="forbid"))
class EvaluatedTrial(TypedDict):
    """A trial MIPROv2 evaluated, on a minibatch or (``full``) the whole valset."""

    number: int
    params: dict[str, int]
    score: float
    full: bool


class SearchState(CheckpointModel):
    """MIPROv2's search record: every trial told, and the minibatch scores of each combination."""

    told: list[ToldTrial]
    minibatch_scores: dict[str, list[float]]
    combos: dict[str, dict[str, int]]
    fully_evaluated: dict[str, float]


class BestTrial(CheckpointModel):
    """MIPROv2's best full evaluation so far."""

    score: float
    params: dict[str, int]


class MiproState(CheckpointModel):
    """MIPROv2: the phase, the bootstraps, the instructions proposed and the search so far."""

    phase: MiproPhase
    position: int = Field(ge=0)
    rng: RngState
    tasks: list[BootstrapTaskState]
    instructions: list[list[str]]
    grounding_seed: int
    observed: Grounding | None
    grounding: Grounding | None
    default_score: float | None
    search: SearchState | None
    best: BestTrial | None
    evaluated: list[EvaluatedTrial]


class SimbaState(CheckpointModel):
    """SIMBA: its random state, the trainset order, the pool and the batch in progress."""

    rng: RngState
    order: list[int]
    position: int = Field(ge=0)
    pool: list[Member]
    winners: list[int]
    phase: SimbaPhase
    batch_index: int = Field(ge=0)
    batch: list[int]
    pending: list[Member]
    final: list[tuple[int, float]]  # (pool position, final score)
    logs: list[dict[str, Any]]


# --------------------------------------------------------------------------- reading


def read_checkpoint(data: Any) -> RunCheckpoint:
    """The envelope in ``data``; ConfigurationError for another version or a bad field."""
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"an optimizer checkpoint is a JSON object (OptimizerRun.state_dict()), got {type(data).__name__}"
        )
    version = data.get("version")
    if version != CHECKPOINT_VERSION:
        raise ConfigurationError(
            f"optimizer checkpoint version {version!r}; this dspex reads version {CHECKPOINT_VERSION} "
            "(start the optimization afresh, or resume it with the dspex that wrote it)"
        )
    return _validated(RunCheckpoint, data, path="")


def read_state(model: type[M], data: Any) -> M:
    """An optimizer's ``state`` (the envelope's field) as ``model``; ConfigurationError naming the
    field (as ``state.<path>``) when it does not fit."""
    return _validated(model, data, path="state")


def _validated(model: type[M], data: Any, *, path: str) -> M:
    try:
        # As JSON: strict, and the JSON forms of tuples, sets and integer keys still read back.
        text = json.dumps(data, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"optimizer checkpoint {path or 'data'} is not JSON data: {exc}") from exc
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise ConfigurationError(_summary(model, exc, path)) from exc


def _summary(model: type[BaseModel], exc: ValidationError, path: str) -> str:
    errors = exc.errors(include_url=False)
    shown = "; ".join(_describe(item, path) for item in errors[:_ERRORS_SHOWN])
    more = len(errors) - _ERRORS_SHOWN
    suffix = f"; and {more} more" if more > 0 else ""
    return f"bad optimizer checkpoint ({model.__name__}): {shown}{suffix}"


def _describe(item: Any, path: str) -> str:
    where = ".".join(str(part) for part in (path, *item["loc"]) if part != "") or "value"
    if item["type"] == "missing":
        return f"{where}: missing"
    if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{where}: unknown field"
    expected = item["msg"].removeprefix("Input ")  # "should be a valid integer"
    value = repr(item["input"])
    shown = value if len(value) <= _INPUT_SHOWN else value[: _INPUT_SHOWN - 3] + "..."
    return f"{where}: {expected}, got {type(item['input']).__name__} {shown}"
