"""What the dashboard's JSON API says about jobs and workers, from status and heartbeat messages.

Pure functions over the schema models, so the API's shape is testable without a broker. Strings
(job names, reasons) are passed through as data; the page renders them as text.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from dspex.schemas.status import JobStatus, OptimizeStatus, TrialRecord
from dspex.schemas.workers import WorkerHeartbeat

__all__ = ["WORKER_ALIVE_S", "job_detail", "job_summary", "jobs_view", "workers_view"]

WORKER_ALIVE_S = 10.0
"""A worker whose last heartbeat is older than this is shown as gone (heartbeats come every ~2 s)."""

MAX_JOBS = 200


def job_summary(status: JobStatus | OptimizeStatus) -> dict[str, Any]:
    """One job as the jobs list shows it: state, progress, per-candidate scores, tokens, cost."""
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
        return {**common, **_optimize_summary(status)}
    return {**common, **_eval_summary(status)}


def job_detail(status: JobStatus | OptimizeStatus) -> dict[str, Any]:
    """One job in full: for an optimization, every step's score and the best score so far."""
    detail = job_summary(status)
    if isinstance(status, OptimizeStatus):
        detail["steps"] = trajectory(status.steps)
    return detail


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
    """Workers by kind and id, each with whether its heartbeat is fresh."""
    rows = []
    for beat in sorted(beats, key=lambda b: (b.kind, b.worker_id)):
        age = max((now - beat.sent_at).total_seconds(), 0.0)
        rows.append(
            {
                "worker_id": beat.worker_id,
                "kind": beat.kind,
                "host": beat.host,
                "alive": age < WORKER_ALIVE_S,
                "age_s": round(age, 1),
                "in_flight": beat.in_flight,
                "limit": beat.limit,
                "breaker_state": beat.breaker_state,
                "assigned_partitions": beat.assigned_partitions,
                "paused_partitions": beat.paused_partitions,
                "metrics_url": beat.metrics_url,
            }
        )
    return rows


def _eval_summary(status: JobStatus) -> dict[str, Any]:
    return {
        "parent_job_id": status.parent_job_id,
        "done": status.done,
        "total": status.total_tasks,
        "errors": status.errors,
        "progress": status.done / status.total_tasks if status.total_tasks else 0.0,
        "best_score": max((c.score for c in status.candidates if c.done), default=None),
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
        "best_candidate_id": status.best_candidate_id,
        "candidates": [],
    }


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
