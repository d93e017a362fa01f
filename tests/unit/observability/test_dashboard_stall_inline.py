"""A stalled job scored inline by the predictors is not said to need a scorer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from dspex.observability.dashboard.stalls import ProgressTracker, stall_of
from dspex.observability.dashboard.web import _score_latency
from dspex.schemas import JobStatus, WorkerHeartbeat
from dspex.schemas.results import SCORE_SOURCE_PREDICTOR, SCORE_SOURCE_SCORER

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def heartbeat(kind: str) -> WorkerHeartbeat:
    return WorkerHeartbeat.model_validate(
        {"worker_id": kind, "kind": kind, "host": "h", "pid": 1, "sent_at": NOW}
        | {"started_at": NOW - timedelta(hours=1)}
    )


def stalled_job() -> JobStatus:
    return JobStatus.model_validate(
        {"job_id": "ev", "state": "running", "total_tasks": 10, "done": 3}
        | {"updated_at": NOW - timedelta(seconds=40)}
    )


def score_record(source: str) -> bytes:
    return json.dumps({"job_id": "ev", "latency_s": 0.5, "source": source}).encode()


def reason(tracker: ProgressTracker) -> str:
    status = stalled_job()
    tracker.observe(status)
    live = [heartbeat("predict"), heartbeat("aggregate")]  # no scorer running
    stalled = stall_of(status, tracker, live, NOW)
    assert stalled is not None
    return str(stalled["reason"])


def test_a_job_scored_by_the_scorer_misses_its_scorer() -> None:
    tracker = ProgressTracker()
    tracker.observe_latency(*_note(score_record(SCORE_SOURCE_SCORER)))
    assert reason(tracker) == "no live scorer"


def test_a_job_scored_inline_does_not_need_a_scorer() -> None:
    tracker = ProgressTracker()
    tracker.observe_latency(*_note(score_record(SCORE_SOURCE_PREDICTOR)))
    assert reason(tracker).startswith("group lagging")


def test_a_job_with_no_score_yet_may_still_need_one() -> None:
    assert reason(ProgressTracker()) == "no live scorer"


def _note(value: bytes) -> tuple[str, float, str | None]:
    read = _score_latency(value)
    assert read is not None
    return read
