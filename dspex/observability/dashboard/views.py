"""What the dashboard's JSON API says about jobs and workers, from status and heartbeat messages.

Pure functions over the schema models, so the API's shape is testable without a broker. Strings
(job names, reasons) are passed through as data; the page renders them as text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dspex.observability.dashboard.listing import JobQuery, group_jobs, page_jobs, public_query
from dspex.observability.dashboard.stalls import ProgressTracker, alive, optimization_stall, stall_of
from dspex.schemas.status import JobStatus, OptimizeStatus, TrialRecord
from dspex.schemas.workers import WorkerHeartbeat

__all__ = [
    "WORKER_ALIVE_S",
    "WORKER_GONE_S",
    "Context",
    "job_detail",
    "job_summary",
    "jobs_page",
    "jobs_view",
    "live_candidates",
    "workers_page",
    "workers_view",
]

WORKER_ALIVE_S = 10.0
"""A worker whose last heartbeat is older than this is not alive (heartbeats come every ~2 s)."""
WORKER_GONE_S = 300.0
"""A worker silent for longer than this leaves the list for the "gone" one, with its last state."""

MAX_JOBS = 200

Status = JobStatus | OptimizeStatus


@dataclass
class Context:
    """What a job's row needs beyond its status: progress history, live workers, the time."""

    now: datetime
    tracker: ProgressTracker = field(default_factory=ProgressTracker)
    beats: list[WorkerHeartbeat] = field(default_factory=list)

    @property
    def live(self) -> list[WorkerHeartbeat]:
        """The heartbeats of the workers alive now."""
        return alive(self.beats, self.now, WORKER_ALIVE_S)


def jobs_page(statuses: Iterable[Status], query: JobQuery, context: Context) -> dict[str, Any]:
    """``GET /api/jobs``: the page's rows (optimizations with ``children``) and paging totals."""
    every = list(statuses)
    rows, total = page_jobs(every, query)
    _, children = ({}, {}) if query.flat else group_jobs(every)
    jobs = [_row(status, children.get(status.job_id, []), context, query.flat) for status in rows]
    return {"jobs": jobs, **public_query(query, total)}


def _row(status: Status, subs: list[Status], context: Context, flat: bool) -> dict[str, Any]:
    summary = job_summary(status, context)
    if isinstance(status, OptimizeStatus) and not flat:
        summary["children"] = [job_summary(sub, context) for sub in subs]
        _fold_children(summary)
    return summary


def _fold_children(summary: dict[str, Any]) -> None:
    """An optimization's row says how its sub-jobs stand, and is stalled when one of them is."""
    children: list[dict[str, Any]] = summary["children"]
    summary["children_running"] = sum(1 for child in children if child["state"] == "running")
    if summary["state"] == "running" and summary.get("stalled") is None:
        summary["stalled"] = optimization_stall({child["job_id"]: child for child in children})


def job_summary(status: JobStatus | OptimizeStatus, context: Context | None = None) -> dict[str, Any]:
    """One job as the jobs list shows it: state, progress, per-candidate scores, tokens, cost, and
    (with a ``context``) whether it is stalled."""
    common = {
        "job_id": status.job_id,
        "kind": status.kind,
        "name": status.name,
        "state": status.state,
        "reason": status.reason,
        "prompt_tokens": status.usage.prompt_tokens,
        "completion_tokens": status.usage.completion_tokens,
        "cost_usd": status.usage.cost_usd,
        "started_at": _time(status.started_at),
        "updated_at": _time(status.updated_at),
        "finished_at": _time(status.finished_at),
    }
    if isinstance(status, OptimizeStatus):
        return {**common, **_optimize_summary(status), "stalled": None}
    stalled = stall_of(status, context.tracker, context.live, context.now) if context else None
    return {**common, **_eval_summary(status), "stalled": stalled}


def job_detail(
    status: JobStatus | OptimizeStatus,
    context: Context | None = None,
    statuses: Iterable[Status] = (),
) -> dict[str, Any]:
    """One job in full: for an optimization, every step's score and the best score so far, and its
    sub-jobs (from ``statuses``)."""
    detail = job_summary(status, context)
    if isinstance(status, OptimizeStatus):
        detail["steps"] = trajectory(status.steps)
        _, children = group_jobs(statuses)
        detail["children"] = [job_summary(sub, context) for sub in children.get(status.job_id, [])]
        _fold_children(detail)
        detail["live"] = live_candidates(detail["children"])
    return detail


def live_candidates(children: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidates a running optimization is evaluating now, each with its score so far: the
    trajectory's next points, partial until their evaluation ends."""
    points = []
    for child in children:
        if child["state"] not in ("pending", "running"):
            continue
        for candidate in child["candidates"]:
            if candidate["done"]:
                points.append({"eval_job_id": child["job_id"], "partial": True, **candidate})
    return points


def trajectory(steps: Iterable[TrialRecord]) -> list[dict[str, Any]]:
    """Steps in order, each with its score and the best score up to and including it."""
    best: float | None = None
    points = []
    for step in sorted(steps, key=lambda s: s.step):
        if step.score is not None:
            best = step.score if best is None else max(best, step.score)
        points.append(
            {
                "step": step.step,
                "candidate_id": step.candidate_id,
                "score": step.score,
                "best_so_far": best,
                "num_examples": step.num_examples,
                "kind": step.kind,
                "eval_job_id": step.eval_job_id,
            }
        )
    return points


def jobs_view(statuses: Iterable[JobStatus | OptimizeStatus]) -> list[dict[str, Any]]:
    """Job summaries, the most recently updated first (at most MAX_JOBS)."""
    ordered = sorted(statuses, key=lambda s: s.updated_at, reverse=True)
    return [job_summary(status) for status in ordered[:MAX_JOBS]]


def workers_view(beats: Iterable[WorkerHeartbeat], now: datetime) -> list[dict[str, Any]]:
    """Workers by kind and id, each with whether its heartbeat is fresh (gone ones included)."""
    rows = []
    for beat in sorted(beats, key=lambda b: (b.kind, b.worker_id)):
        age = max((now - beat.sent_at).total_seconds(), 0.0)
        rows.append(
            {
                "worker_id": beat.worker_id,
                "kind": beat.kind,
                "host": beat.host,
                "alive": age < WORKER_ALIVE_S,
                "gone": age >= WORKER_GONE_S,
                "age_s": round(age, 1),
                "last_seen": beat.sent_at.isoformat(),
                "in_flight": beat.in_flight,
                "limit": beat.limit,
                "dispatch_window": beat.dispatch_window,  # what runs at most: limit can read higher
                "breaker_state": beat.breaker_state,
                "assigned_partitions": beat.assigned_partitions,
                "paused_partitions": beat.paused_partitions,
                "metrics_url": beat.metrics_url,
            }
        )
    return rows


def workers_page(beats: Iterable[WorkerHeartbeat], now: datetime) -> dict[str, Any]:
    """``GET /api/workers``: the workers heard from in the last WORKER_GONE_S, and apart, the ones
    silent longer, each with its last state (``gone``)."""
    rows = workers_view(beats, now)
    return {
        "workers": [row for row in rows if not row["gone"]],
        "gone": [row for row in rows if row["gone"]],
        "gone_after_s": WORKER_GONE_S,
    }


def _best(status: JobStatus) -> dict[str, Any]:
    """The best candidate's score so far; ``partial`` while it covers only some of its examples (a
    half-done evaluation at 100.0 is not a final 100.0)."""
    started = [c for c in status.candidates if c.done]
    if not started:
        return {"best_score": None, "best_partial": False, "best_done": 0, "best_total": 0}
    best = max(started, key=lambda c: c.score)
    return {
        "best_score": best.score,
        "best_partial": best.done < best.total,
        "best_done": best.done,
        "best_total": best.total,
    }


def _eval_summary(status: JobStatus) -> dict[str, Any]:
    return {
        "parent_job_id": status.parent_job_id,
        "done": status.done,
        "total": status.total_tasks,
        "errors": status.errors,
        "progress": status.done / status.total_tasks if status.total_tasks else 0.0,
        **_best(status),
        "candidates": [
            {
                "candidate_id": c.candidate_id,
                "score": c.score,
                "done": c.done,
                "total": c.total,
                "errors": c.errors,
            }
            for c in status.candidates
        ],
    }


def _optimize_summary(status: OptimizeStatus) -> dict[str, Any]:
    return {
        "optimizer": status.optimizer,
        "done": len(status.steps),
        "total": None,
        # failed steps say so; a step without a score did not fail for that alone (a bootstrap wave,
        # MIPROv2's and SIMBA's minibatch trials, whose scores are not comparable with full ones)
        "errors": sum(1 for step in status.steps if step.error is not None),
        "progress": None,
        "best_score": status.best_score,
        "best_partial": False,
        "best_candidate_id": status.best_candidate_id,
        "candidates": [],
    }


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
