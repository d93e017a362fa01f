"""Values of the workers topic (key: worker_id, compacted, short retention): heartbeats."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from dspex.schemas.base import Message, Timestamp, WireModel, utc_now
from dspex.schemas.common import UsageRecord

__all__ = ["BreakerState", "EndpointHealth", "WorkerHeartbeat", "WorkerKind"]

WorkerKind = Literal["predict", "score", "aggregate", "optimize", "intake", "provider-batch"]
BreakerState = Literal["closed", "open", "half_open"]


class EndpointHealth(WireModel):
    """The limiter and breaker of one LM endpoint a worker talks to."""

    api_base: str
    limit: float = Field(ge=0, description="The adaptive limiter's current concurrency limit.")
    in_flight: int = Field(default=0, ge=0)
    breaker_state: BreakerState = "closed"


class WorkerHeartbeat(Message):
    """A worker saying it is alive and how loaded it is; what ``dspex status`` shows about workers.

    ``limit`` and ``breaker_state`` summarize its LM endpoints (the smallest limit, the worst
    breaker); ``endpoints`` has them one by one. ``concurrency``: the most messages it runs at once
    (``--concurrency``), so the most in-flight slots one job can get there.

    ``unreported``: per job, the LM calls answered that no acknowledged record carries yet; they
    are lost if the worker dies without a word (kill -9). A predictor's: its running tasks' calls
    not yet in a prediction or usage report. An optimize worker's: per optimization, what the step
    in progress spent (its own calls and finished sub-jobs) since the last acknowledged checkpoint.
    ``final``: the worker's last heartbeat, sent as it stops in order, after its tasks were drained.
    An aggregator that stops hearing from a predictor whose last heartbeat was not final adds that
    heartbeat's ``unreported`` to the jobs' ``usage_unreported``; the next owner of an optimization
    does the same for a dead optimize worker's (``OptimizeStatus.usage_unreported``).
    ``dispatch_window``: how many tasks the worker lets run at once now (``in_flight`` stays
    below it): the least of ``--concurrency``, what its event loop can serve and its LM limits
    plus headroom. ``limit`` alone can read higher than what runs.
    """

    SCHEMA_VERSION: ClassVar[str] = "1.1"  # 1.1: unreported, final, dispatch_window

    worker_id: str
    kind: WorkerKind
    host: str
    pid: int = Field(ge=0)
    group_id: str | None = None
    version: str | None = Field(default=None, description="dspex version of the worker.")
    started_at: Timestamp
    sent_at: Timestamp = Field(default_factory=utc_now)
    in_flight: int = Field(default=0, ge=0)
    limit: float | None = Field(default=None, ge=0)
    breaker_state: BreakerState = "closed"
    endpoints: list[EndpointHealth] = Field(default_factory=list)
    assigned_partitions: int = Field(default=0, ge=0)
    paused_partitions: int = Field(default=0, ge=0)
    metrics_url: str | None = None
    concurrency: int | None = Field(
        default=None, ge=1, description="--concurrency: messages run at once at most."
    )
    dispatch_window: int | None = Field(
        default=None, ge=0, description="Tasks it lets run at once now (a predictor's; absent: older)."
    )
    unreported: dict[str, UsageRecord] = Field(
        default_factory=dict,
        description="Per job: LM calls answered that no acknowledged record carries yet.",
    )
    final: bool = Field(default=False, description="The last heartbeat of a worker stopping in order.")
