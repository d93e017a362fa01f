"""What `dspex status` says about cost a killed predictor left unreported, and about how many tasks
a predictor lets run (its window, below the LM limiter's number when its event loop holds it)."""

from __future__ import annotations

from datetime import UTC, datetime

from dspex.cli._ids import ResolvedJob
from dspex.cli._status_view import describe_job, describe_overview
from dspex.schemas import JobStatus, UsageRecord

NOW = datetime(2026, 12, 5, 11, 0, tzinfo=UTC)


def _status(unreported: int | None) -> JobStatus:
    return JobStatus(
        job_id="job-1",
        state="completed",
        total_tasks=10,
        done=10,
        started_at=NOW,
        updated_at=NOW,
        finished_at=NOW,
        usage=UsageRecord(lm_calls=20),
        usage_unreported=None if unreported is None else UsageRecord(lm_calls=unreported),
    )


def test_a_job_says_how_many_calls_a_dead_predictor_left_uncharged() -> None:
    text = describe_job(ResolvedJob("job-1", _status(7)), NOW)
    assert "up to 7 LM calls not charged: a predictor died" in text
    assert "not charged" not in describe_job(ResolvedJob("job-1", _status(None)), NOW)


def test_the_workers_list_shows_a_predictors_window_beside_its_tasks_in_flight() -> None:
    worker = {"kind": "predict", "worker_id": "p1", "host": "h", "pid": 1, "in_flight": 3, "alive": True}
    overview = {
        "jobs": [],
        "workers": [{**worker, "dispatch_window": 80}, {**worker, "worker_id": "p0"}],
        "lag": {},
    }
    text = describe_overview(overview)
    assert "p1  h:1  in flight 3 of 80  alive" in text
    assert "p0  h:1  in flight 3  alive" in text  # an older predictor's heartbeat has no window
