"""The dashboard's jobs list: sub-jobs folded under their optimization, filters, paging, bad queries,
and stall detection with its reasons; the API answers through the real aiohttp app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from dashboard_fakes import FixedJobs

from dspex.errors import ConfigurationError
from dspex.observability.dashboard import create_app
from dspex.observability.dashboard.listing import JobQuery
from dspex.observability.dashboard.stalls import ProgressTracker, p95
from dspex.observability.dashboard.views import Context, job_detail, jobs_page, workers_page
from dspex.schemas import CandidateAggregate, JobStatus, OptimizeStatus, WorkerHeartbeat
from dspex.schemas.workers import EndpointHealth

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
Status = JobStatus | OptimizeStatus


def evaluation(job_id: str, minutes_ago: int, **fields: object) -> JobStatus:
    values: dict[str, object] = {
        "job_id": job_id,
        "state": "completed",
        "total_tasks": 10,
        "done": 10,
        "started_at": NOW - timedelta(minutes=minutes_ago),
        "updated_at": NOW,
    }
    return JobStatus.model_validate({**values, **fields})


def optimization(job_id: str, minutes_ago: int, **fields: object) -> OptimizeStatus:
    values: dict[str, object] = {
        "job_id": job_id,
        "state": "running",
        "optimizer": "bootstrap_rs",
        "started_at": NOW - timedelta(minutes=minutes_ago),
        "updated_at": NOW,
    }
    return OptimizeStatus.model_validate({**values, **fields})


def beat(worker_id: str, kind: str, age_s: float = 1.0, **fields: object) -> WorkerHeartbeat:
    values: dict[str, object] = {
        "worker_id": worker_id,
        "kind": kind,
        "host": "h",
        "pid": 1,
        "started_at": NOW - timedelta(hours=1),
        "sent_at": NOW - timedelta(seconds=age_s),
    }
    return WorkerHeartbeat.model_validate({**values, **fields})


HEALTHY = [beat("p1", "predict"), beat("s1", "score"), beat("a1", "aggregate")]


def four_optimizations() -> list[Status]:
    """Four optimizations, each with 15 sub-evaluations, and two evaluations of their own."""
    statuses: list[Status] = []
    for n in range(4):
        statuses.append(optimization(f"opt{n}", 100 - n, name=f"run {n}", state="completed"))
        statuses += [evaluation(f"opt{n}-ev{i}", 99 - n, parent_job_id=f"opt{n}") for i in range(15)]
    statuses.append(evaluation("solo-a", 10, name="Nightly QA", state="failed"))
    statuses.append(evaluation("solo-b", 5, parent_job_id="gone-opt"))  # its optimization is not listed
    return statuses


def page(statuses: list[Status], **params: str) -> dict[str, Any]:
    return jobs_page(statuses, JobQuery.parse(params), Context(now=NOW, beats=HEALTHY))


def test_sub_evaluations_are_folded_under_their_optimization() -> None:
    body = page(four_optimizations())
    jobs = body["jobs"]
    assert isinstance(jobs, list)
    # 66 statuses are 6 rows, newest started first; an orphan sub-job stays a row of its own
    assert [j["job_id"] for j in jobs] == ["solo-b", "solo-a", "opt3", "opt2", "opt1", "opt0"]
    assert body["total"] == 6
    opt3 = jobs[2]
    assert len(opt3["children"]) == 15 and {c["parent_job_id"] for c in opt3["children"]} == {"opt3"}
    assert opt3["children_running"] == 0
    flat = page(four_optimizations(), flat="true")
    assert flat["total"] == 66 and all("children" not in j for j in flat["jobs"])


def test_filters_by_state_kind_and_name_and_pages() -> None:
    statuses = four_optimizations()
    assert [j["job_id"] for j in page(statuses, state="failed")["jobs"]] == ["solo-a"]
    assert page(statuses, kind="optimize")["total"] == 4
    assert page(statuses, kind="eval,optimize", state="completed,failed")["total"] == 6
    assert [j["job_id"] for j in page(statuses, name="nightly")["jobs"]] == ["solo-a"]
    assert [j["job_id"] for j in page(statuses, name="OPT1")["jobs"]] == ["opt1"]
    second = page(statuses, offset="2", limit="2")
    assert [j["job_id"] for j in second["jobs"]] == ["opt3", "opt2"]
    assert (second["total"], second["offset"], second["limit"]) == (6, 2, 2)
    assert page(statuses, offset="6")["jobs"] == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": "runing"}, "unknown state runing"),
        ({"kind": "train"}, "unknown kind train"),
        ({"limit": "0"}, "limit must be between 1 and 500"),
        ({"offset": "x"}, "offset must be an integer"),
    ],
)
def test_a_bad_query_is_refused_naming_the_parameter(params: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        JobQuery.parse(params)


def test_a_half_done_evaluation_shows_its_best_score_as_partial() -> None:
    half = evaluation(
        "ev",
        1,
        state="running",
        total_tasks=2200,
        done=500,
        candidates=[CandidateAggregate(candidate_id="c", total=2200, done=500, score_sum=500.0)],
    )
    row = page([half])["jobs"][0]
    assert (row["best_score"], row["best_partial"], row["best_done"], row["best_total"]) == (
        100.0,
        True,
        500,
        2200,
    )
    done = half.model_copy(update={"candidates": [CandidateAggregate(candidate_id="c", total=4, done=4)]})
    assert page([done])["jobs"][0]["best_partial"] is False


def running(done: int, updated_s_ago: float) -> JobStatus:
    return evaluation("ev", 10, state="running", done=done, updated_at=NOW - timedelta(seconds=updated_s_ago))


def stall(tracker: ProgressTracker, beats: list[WorkerHeartbeat], status: Status) -> Any:
    return jobs_page([status], JobQuery(), Context(now=NOW, tracker=tracker, beats=beats))["jobs"][0][
        "stalled"
    ]


def test_a_running_job_without_progress_for_30_s_is_stalled_with_the_reason() -> None:
    tracker = ProgressTracker()
    tracker.observe(running(3, updated_s_ago=40))
    # statuses keep coming every second with the same count: they are no progress
    for age in range(39, 0, -1):
        tracker.observe(running(3, updated_s_ago=age))
    latest = running(3, updated_s_ago=0)
    no_predictor = stall(tracker, [*HEALTHY[1:], beat("p1", "predict", age_s=60)], latest)
    assert no_predictor == {
        "since": (NOW - timedelta(seconds=40)).isoformat(),
        "idle_s": 40.0,
        "threshold_s": 30.0,
        "reason": "no live predictor",
    }
    open_everywhere = [
        beat("p1", "predict", breaker_state="open"),
        beat("p2", "predict", endpoints=[EndpointHealth(api_base="x", limit=1, breaker_state="open")]),
        *HEALTHY[1:],
    ]
    assert stall(tracker, open_everywhere, latest)["reason"] == "breaker open on every live predictor (2)"
    lagging = stall(tracker, HEALTHY, latest)
    assert str(lagging["reason"]).startswith("group lagging")
    assert stall(tracker, HEALTHY[:2], latest)["reason"] == "no live aggregator"
    # one more task done: progressing again
    tracker.observe(running(4, updated_s_ago=0))
    assert stall(tracker, [], running(4, 0)) is None


def test_the_stall_threshold_is_five_times_the_recent_p95_example_time() -> None:
    tracker = ProgressTracker()
    tracker.observe(running(3, updated_s_ago=40))
    for _ in range(19):
        tracker.observe_latency("ev", 2.0)
    tracker.observe_latency("ev", 10.0)  # p95 of 20 values by nearest rank is the 19th: 2.0
    assert p95([2.0] * 19 + [10.0]) == 2.0
    assert stall(tracker, HEALTHY, running(3, 0)) is not None  # 40 s > max(30, 10)
    tracker.observe_latency("ev", 10.0)  # 2 of 21 at 10 s: p95 is 10 s, threshold 50 s
    assert stall(tracker, HEALTHY, running(3, 0)) is None


def test_an_optimization_is_stalled_when_a_running_sub_evaluation_is() -> None:
    tracker = ProgressTracker()
    sub = evaluation(
        "sub-1234567",
        1,
        state="running",
        parent_job_id="opt",
        done=3,
        candidates=[CandidateAggregate(candidate_id="c", total=10, done=3, score_sum=2.0)],
        updated_at=NOW - timedelta(seconds=45),
    )
    tracker.observe(sub)
    statuses: list[Status] = [optimization("opt", 2), sub.model_copy(update={"updated_at": NOW})]
    row = jobs_page(statuses, JobQuery(), Context(now=NOW, tracker=tracker, beats=[]))["jobs"][0]
    assert row["children_running"] == 1
    # the candidate being evaluated is the trajectory's next point, at its score so far
    detail = job_detail(statuses[0], Context(now=NOW, tracker=tracker), statuses)
    assert [(p["eval_job_id"], p["score"], p["done"], p["partial"]) for p in detail["live"]] == [
        ("sub-1234567", 66.67, 3, True)
    ]
    assert row["stalled"]["reason"] == "sub-job sub-1234: no live predictor"


def test_workers_silent_for_five_minutes_leave_the_list_with_their_last_state() -> None:
    body = workers_page([beat("p1", "predict"), beat("p2", "predict", age_s=301, in_flight=3)], NOW)
    assert [w["worker_id"] for w in body["workers"]] == ["p1"]
    (gone,) = body["gone"]
    assert (gone["worker_id"], gone["gone"], gone["alive"], gone["in_flight"]) == ("p2", True, False, 3)
    assert gone["last_seen"] == (NOW - timedelta(seconds=301)).isoformat()


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(FixedJobs(four_optimizations())))) as made:
        yield made


async def test_the_api_pages_filters_and_refuses_bad_queries(client: TestClient[Any, Any]) -> None:
    listed = await (await client.get("/api/jobs", params={"kind": "optimize", "limit": "3"})).json()
    assert [j["job_id"] for j in listed["jobs"]] == ["opt3", "opt2", "opt1"] and listed["total"] == 4
    bad = await client.get("/api/jobs", params={"state": "nope"})
    assert bad.status == 400 and "unknown state nope" in (await bad.json())["error"]
    detail = await (await client.get("/api/jobs/opt2")).json()
    assert len(detail["children"]) == 15 and detail["stalled"] is None
    workers = await (await client.get("/api/workers")).json()
    assert workers == {"workers": [], "gone": [], "gone_after_s": 300.0}
