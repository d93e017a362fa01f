"""McNemar's paired test as the dashboard computes it, checked against published table values, and the
comparison and per-example routes over records served by a stand-in reader (the real reader on a
real broker: tests/integration/observability/test_dashboard_records.py)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from dashboard_fakes import FixedJobs

from dspex.observability.dashboard import create_app
from dspex.observability.dashboard.compare import chi2_sf_1df, compare_scores, mcnemar
from dspex.observability.dashboard.records import JobRecords
from dspex.schemas import CandidateAggregate, JobStatus, ScoreRecord
from dspex.schemas.common import MetricSpec, TraceEntry
from dspex.schemas.jobs import DatasetSummary, EvalJob

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("statistic", "p_value"),
    # the chi-square table's critical values for one degree of freedom
    [(3.841458820694124, 0.05), (6.634896601021214, 0.01), (10.827566170662733, 0.001)],
)
def test_the_chi_square_tail_matches_the_table(statistic: float, p_value: float) -> None:
    assert math.isclose(chi2_sf_1df(statistic), p_value, rel_tol=1e-9)


def test_few_discordant_pairs_use_the_exact_binomial_test() -> None:
    # binomial table, n = 10, p = 1/2: P(X <= 1) = 0.0107; n = 20: P(X <= 5) = 0.0207
    assert mcnemar(1, 9) == {"method": "exact", "statistic": 1.0, "p_value": 2 * 11 / 1024}
    assert math.isclose(mcnemar(15, 5)["p_value"], 2 * 0.020694732666015625)
    assert mcnemar(4, 4)["p_value"] == 1.0 and mcnemar(0, 0)["p_value"] == 1.0


def test_many_discordant_pairs_use_chi_square_with_continuity_correction() -> None:
    # 121 vs 59 discordant pairs: (|121 - 59| - 1)^2 / 180 = 20.67, beyond the 0.001 critical value
    result = mcnemar(121, 59)
    assert result["method"] == "chi2-cc"
    assert math.isclose(result["statistic"], 61**2 / 180)
    assert result["p_value"] < 0.001
    # at 25 pairs the chi-square is used: 20 vs 5 gives (15 - 1)^2 / 25 = 7.84 > 6.63 (p < 0.01)
    assert mcnemar(20, 5)["method"] == "chi2-cc" and 0.001 < mcnemar(20, 5)["p_value"] < 0.01


def score(job: str, index: int, value: float, candidate: str = "c", **fields: object) -> ScoreRecord:
    return ScoreRecord.model_validate(
        {
            "job_id": job,
            "candidate_id": candidate,
            "example_index": index,
            "task_id": f"{job}-{index}",
            "score": value,
            **fields,
        }
    )


def test_the_comparison_pairs_examples_and_lists_the_flips() -> None:
    a = [score("a", i, v) for i, v in enumerate([1, 1, 0, 0, 1, 1])]
    b = [score("b", i, v) for i, v in enumerate([1, 0, 1, 1, 1])]  # example 5 not scored yet
    result = compare_scores(a, b)
    assert (result["paired"], result["unpaired_a"], result["unpaired_b"]) == (5, 1, 0)
    assert (result["score_a"], result["score_b"], result["delta"]) == (60.0, 80.0, 20.0)
    assert (result["only_a_passed"], result["only_b_passed"]) == (1, 2)
    assert [(f["example_index"], f["direction"]) for f in result["flipped"]] == [
        (1, "lost"),
        (2, "gained"),
        (3, "gained"),
    ]
    assert result["mcnemar"]["p_value"] == 1.0  # 1 vs 2 of 3: 2 x P(X <= 1) = 2 x 4/8


def evaluation(job_id: str, candidates: list[str]) -> JobStatus:
    return JobStatus(
        job_id=job_id,
        state="completed",
        total_tasks=4 * len(candidates),
        done=4 * len(candidates),
        candidates=[CandidateAggregate(candidate_id=c, total=4, done=4) for c in candidates],
        updated_at=NOW,
    )


def job(job_id: str, fingerprint: str, num_examples: int = 4) -> EvalJob:
    return EvalJob(
        job_id=job_id,
        candidate_ids=["c"],
        metric=MetricSpec(name="exact_match"),
        num_examples=num_examples,
        dataset=DatasetSummary(fingerprint=fingerprint, input_keys=["question"]),
    )


RECORDS = {
    "base": JobRecords(job("base", "ds1"), [score("base", i, v) for i, v in enumerate([1, 0, 0, 0])]),
    "tuned": JobRecords(
        job("tuned", "ds1"),
        [
            score(
                "tuned",
                i,
                v,
                example={"question": f"q{i}", "answer": "a"},
                outputs={"answer": "a"},
                trace=[
                    TraceEntry(predictor="predict", inputs={"question": f"q{i}"}, outputs={"answer": "a"})
                ],
                worker_id="p-1",
                latency_s=0.25,
            )
            for i, v in enumerate([1, 1, 1, 0])
        ],
    ),
    "other": JobRecords(job("other", "ds2"), []),
    "two": JobRecords(job("two", "ds1"), []),
}


JOBS = FixedJobs(
    [
        evaluation("base", ["c"]),
        evaluation("tuned", ["c"]),
        evaluation("other", ["c"]),
        evaluation("two", ["c1", "c2"]),
    ]
)


async def read(status: JobStatus) -> JobRecords:
    return RECORDS[status.job_id]


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(JOBS, records=read))) as made:
        yield made


async def test_the_compare_route_answers_and_refuses_different_datasets(client: TestClient[Any, Any]) -> None:
    answer = await client.get("/api/compare", params={"a": "base", "b": "tuned"})
    body = await answer.json()
    assert answer.status == 200, body
    assert (body["a"]["job_id"], body["b"]["candidate_id"]) == ("base", "c")
    assert (body["delta"], body["only_b_passed"], body["mcnemar"]["p_value"]) == (50.0, 2, 0.5)
    assert [f["example_index"] for f in body["flipped"]] == [1, 2]
    other = await client.get("/api/compare", params={"a": "base", "b": "other"})
    assert other.status == 400 and "not the same dataset" in (await other.json())["error"]
    several = await client.get("/api/compare", params={"a": "base", "b": "two"})
    assert several.status == 400 and "pass candidate_b=one of c1, c2" in (await several.json())["error"]
    missing = await client.get("/api/compare", params={"a": "base"})
    assert missing.status == 400


async def test_the_examples_routes_list_and_detail_an_example(client: TestClient[Any, Any]) -> None:
    listed = await (await client.get("/api/jobs/tuned/examples", params={"limit": "2", "offset": "1"})).json()
    assert [row["example_index"] for row in listed["examples"]] == [1, 2] and listed["total"] == 4
    assert listed["input_keys"] == ["question"]
    detail = await (await client.get("/api/jobs/tuned/examples/2")).json()
    assert (detail["inputs"], detail["gold"], detail["outputs"]) == (
        {"question": "q2"},
        {"answer": "a"},
        {"answer": "a"},
    )
    assert detail["trace"][0]["predictor"] == "predict"
    assert (detail["worker_id"], detail["latency_s"], detail["score"]) == ("p-1", 0.25, 1.0)
    assert (await client.get("/api/jobs/tuned/examples/9")).status == 404
    assert (await client.get("/api/jobs/nope/examples")).status == 404
