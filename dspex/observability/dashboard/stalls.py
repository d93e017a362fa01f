"""Stall detection: a running job that stopped finishing tasks, and the likeliest reason why.

A status writer sends a running job's status every second whether or not anything moved, so a fresh
``updated_at`` says nothing about progress. :class:`ProgressTracker` remembers, per job, when its
count of finished tasks (an optimization: its steps) last changed, as seen on the status topic, and
the latency of its recent examples as seen on the scores topic. A running job is *stalled* when no
task finished for ``max(30 s, 5 x p95 of its recent example latencies)``.

The reason comes from the workers' heartbeats: no live predictor (or scorer, or aggregator), every
live predictor's circuit breaker open, or else the group lagging (workers alive and healthy, but
this job's tasks are not being done: queued behind other work or not consumed). A job whose scores
come from the predictors (a built-in metric scored inline, ``source="predictor"``) needs no scorer,
so a missing scorer is not its reason.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dspex.schemas.results import SCORE_SOURCE_PREDICTOR
from dspex.schemas.status import JobStatus, OptimizeStatus
from dspex.schemas.workers import WorkerHeartbeat

__all__ = [
    "LATENCY_WINDOW",
    "STALL_FACTOR",
    "STALL_MIN_S",
    "ProgressTracker",
    "p95",
    "stall_of",
    "stall_reason",
]

STALL_MIN_S = 30.0
"""No task finished for at least this long (and for STALL_FACTOR x p95 example time): stalled."""
STALL_FACTOR = 5.0
LATENCY_WINDOW = 200
"""How many of a job's latest example latencies make its "recent" p95."""

Status = JobStatus | OptimizeStatus
_NEEDED_KINDS = (("predict", "predictor"), ("score", "scorer"), ("aggregate", "aggregator"))


@dataclass
class _Progress:
    mark: tuple[str, int]
    since: datetime


class ProgressTracker:
    """When each job last made progress, and its recent example latencies."""

    def __init__(self) -> None:
        self._progress: dict[str, _Progress] = {}
        self._latencies: dict[str, deque[float]] = {}
        self._scored_inline: set[str] = set()

    def observe(self, status: Status) -> None:
        """Note a status as read from the topic (in topic order)."""
        done = len(status.steps) if isinstance(status, OptimizeStatus) else status.done
        mark = (status.state, done)
        known = self._progress.get(status.job_id)
        if known is None or known.mark != mark:
            since = status.started_at if known is None and done == 0 and status.started_at else None
            self._progress[status.job_id] = _Progress(mark, since or status.updated_at)

    def observe_latency(self, job_id: str, latency_s: float, source: str | None = None) -> None:
        """Note one finished example's latency (``source``: the score record's, who scored it)."""
        window = self._latencies.setdefault(job_id, deque(maxlen=LATENCY_WINDOW))
        window.append(latency_s)
        if source == SCORE_SOURCE_PREDICTOR:
            self._scored_inline.add(job_id)

    def needs_scorer(self, job_id: str) -> bool:
        """False once a score of the job came from a predictor: its metric is scored inline."""
        return job_id not in self._scored_inline

    def retain(self, job_ids: set[str]) -> None:
        """Forget the progress of every job but ``job_ids`` (a purged job's goes with its status).

        Latencies stay: a job's scores may be read before its first status is."""
        for gone in [job_id for job_id in self._progress if job_id not in job_ids]:
            del self._progress[gone]

    def last_progress(self, job_id: str) -> datetime | None:
        """When the job's finished-task count last changed (None: never seen)."""
        known = self._progress.get(job_id)
        return known.since if known is not None else None

    def p95_latency(self, job_id: str) -> float | None:
        """p95 of the job's recent example latencies (None: none seen)."""
        return p95(self._latencies.get(job_id, ()))


def p95(values: Iterable[float]) -> float | None:
    """The 95th percentile by nearest rank (None for no values)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


def stall_of(
    status: JobStatus,
    tracker: ProgressTracker,
    live: Iterable[WorkerHeartbeat],
    now: datetime,
) -> dict[str, Any] | None:
    """``{since, reason, idle_s, threshold_s}`` when a running evaluation is stalled, else None.

    ``live``: the heartbeats of the workers alive now.
    """
    if status.state != "running":
        return None
    since = tracker.last_progress(status.job_id) or status.started_at or status.updated_at
    latency = tracker.p95_latency(status.job_id)
    threshold = max(STALL_MIN_S, STALL_FACTOR * latency) if latency is not None else STALL_MIN_S
    idle = (now - since).total_seconds()
    if idle < threshold:
        return None
    return {
        "since": since.isoformat(),
        "idle_s": round(idle, 1),
        "threshold_s": round(threshold, 1),
        "reason": stall_reason(live, needs_scorer=tracker.needs_scorer(status.job_id)),
    }


def stall_reason(live: Iterable[WorkerHeartbeat], *, needs_scorer: bool = True) -> str:
    """Why tasks are not being done, from the live workers' heartbeats."""
    by_kind: dict[str, list[WorkerHeartbeat]] = {}
    for beat in live:
        by_kind.setdefault(beat.kind, []).append(beat)
    for kind, noun in _NEEDED_KINDS:
        if kind == "score" and not needs_scorer:
            continue
        if not by_kind.get(kind):
            return f"no live {noun}"
    predictors = by_kind["predict"]
    open_ = [beat for beat in predictors if _breaker_open(beat)]
    if len(open_) == len(predictors):
        return f"breaker open on every live predictor ({len(predictors)})"
    note = f" (breaker open on {len(open_)} of {len(predictors)} predictors)" if open_ else ""
    return "group lagging: workers are alive but none of this job's tasks finished" + note


def optimization_stall(children: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
    """An optimization is stalled when one of its running sub-evaluations is (the first one)."""
    for job_id, summary in children.items():
        stalled = summary.get("stalled")
        if stalled:
            return {**stalled, "reason": f"sub-job {job_id[:8]}: {stalled['reason']}"}
    return None


def alive(beats: Iterable[WorkerHeartbeat], now: datetime, alive_s: float) -> list[WorkerHeartbeat]:
    """The heartbeats at most ``alive_s`` old."""
    limit = timedelta(seconds=alive_s)
    return [beat for beat in beats if now - beat.sent_at < limit]


def _breaker_open(beat: WorkerHeartbeat) -> bool:
    if beat.endpoints:
        return all(endpoint.breaker_state == "open" for endpoint in beat.endpoints)
    return beat.breaker_state == "open"
