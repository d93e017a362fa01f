"""The dashboard API's view of statuses and heartbeats (pure functions), and its port error."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from dashboard_fakes import FixedJobs

from dspex.errors import ConfigurationError
from dspex.observability.dashboard import create_app, start_site
from dspex.observability.dashboard.views import job_detail, jobs_view, workers_view
from dspex.schemas import CandidateAggregate, JobStatus, OptimizeStatus, TrialRecord, WorkerHeartbeat

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def optimize_status() -> OptimizeStatus:
    steps = [
        TrialRecord(step=2, candidate_id="c2", score=40.0, num_examples=10),
        TrialRecord(step=0, candidate_id="c0", score=50.0, num_examples=10),
        TrialRecord(step=1, candidate_id="c1", score=None, num_examples=10, error="every example failed"),
        TrialRecord(step=3, candidate_id="c3", score=75.0, num_examples=10),
        # a minibatch trial: its score is in its note, not comparable with full ones; not a failure
        TrialRecord(step=4, candidate_id="c4", score=None, num_examples=5, kind="minibatch", note="score 80"),
    ]
    return OptimizeStatus(
        job_id="opt-1", name="<b>opt</b>", state="running", optimizer="mipro", steps=steps, updated_at=NOW
    )


def test_an_optimization_has_its_steps_in_order_with_the_best_so_far() -> None:
    detail = job_detail(optimize_status())
    assert [s["step"] for s in detail["steps"]] == [0, 1, 2, 3, 4]
    assert [s["best_so_far"] for s in detail["steps"]] == [50.0, 50.0, 50.0, 75.0, 75.0]
    assert detail["name"] == "<b>opt</b>"  # data, unescaped: the page renders it as text
    assert detail["done"] == 5 and detail["errors"] == 1


def test_an_evaluation_reports_progress_and_scores_per_candidate() -> None:
    status = JobStatus(
        job_id="ev-1",
        state="running",
        total_tasks=40,
        done=10,
        candidates=[CandidateAggregate(candidate_id="c", total=40, done=10, score_sum=7.0)],
        updated_at=NOW,
    )
    older = status.model_copy(
        update={"job_id": "ev-0", "updated_at": NOW - timedelta(minutes=1), "parent_job_id": "opt-1"}
    )
    jobs = jobs_view([older, status])
    assert [j["job_id"] for j in jobs] == ["ev-1", "ev-0"]
    assert jobs[0]["progress"] == 0.25 and jobs[0]["candidates"][0]["score"] == 70.0
    assert jobs[0]["best_score"] == 70.0
    assert (jobs[0]["parent_job_id"], jobs[1]["parent_job_id"]) == (None, "opt-1")


def test_a_worker_with_a_stale_heartbeat_is_shown_as_gone() -> None:
    fresh = WorkerHeartbeat(worker_id="p1", kind="predict", host="h", pid=1, started_at=NOW, sent_at=NOW)
    stale = fresh.model_copy(update={"worker_id": "p2", "sent_at": NOW - timedelta(seconds=60)})
    rows = {r["worker_id"]: r for r in workers_view([fresh, stale], NOW)}
    assert rows["p1"]["alive"] and not rows["p2"]["alive"]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def test_a_dashboard_port_in_use_is_an_error_naming_it(taken_port: int) -> None:
    with pytest.raises(ConfigurationError, match=f"dashboard port {taken_port} .*already in use"):
        await start_site(create_app(FixedJobs()), "127.0.0.1", taken_port)
