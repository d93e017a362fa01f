"""Values of the optimizer-state topic (key: job_id, compacted): where a restarted coordinator resumes."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from dspex.schemas.base import Message, Timestamp, utc_now
from dspex.schemas.common import UsageRecord
from dspex.schemas.status import TrialRecord

__all__ = ["OptimizerCheckpoint"]


class OptimizerCheckpoint(Message):
    """An optimization after step ``step``: enough to continue with step ``step + 1``.

    ``state`` is the optimizer's own JSON (candidates made, demos, pending proposals);
    ``rng_state`` its random state as JSON (e.g. ``random.getstate()`` with tuples as lists);
    ``history`` the trials so far, in trial order.
    """

    SCHEMA_VERSION: ClassVar[str] = "1.1"  # 1.1: unreported

    job_id: str
    step: int = Field(ge=0)
    optimizer: str
    state: dict[str, Any] = Field(default_factory=dict)
    rng_state: Any = None
    history: list[TrialRecord] = Field(default_factory=list)
    best_candidate_id: str | None = None
    best_score: float | None = None
    usage: UsageRecord = Field(default_factory=UsageRecord)
    unreported: dict[str, UsageRecord] = Field(
        default_factory=dict,
        description="Per optimize worker that died mid-step (its death key), what it had spent on "
        "that step (dspex.processors.optimize_unreported); summed as the status's usage_unreported.",
    )
    written_at: Timestamp = Field(default_factory=utc_now)
