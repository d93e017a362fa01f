"""A job's in-flight budget (``num_threads``): capped per predictor, clamped, and said in its status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from dspex.client._submit import in_flight_budget
from dspex.errors import ConfigurationError
from dspex.processors.aggregate_state import JobMeta, build_status
from dspex.processors.fairqueue import FairQueue
from dspex.schemas import EvalJob, MetricSpec


@dataclass(frozen=True)
class Item:
    job: str
    index: int


def _queue(budgets: dict[str, int]) -> FairQueue[Item]:
    """Every item of a job names the job's budget, as every task of a job carries it in a header."""
    return FairQueue(
        lambda item: (item.job, 4),
        budget_of=lambda item: budgets.get(item.job),
        identify=lambda item: (item.job, item.index),
    )


def _fill(queue: FairQueue[Item], job: str, n: int) -> None:
    for index in range(n):
        queue.push(Item(job, index))


def _drain(queue: FairQueue[Item]) -> list[Item]:
    out = []
    while (item := queue.pop()) is not None:
        out.append(item)
    return out


def test_a_job_at_its_budget_is_passed_over_and_the_others_get_its_turns() -> None:
    queue = _queue({"capped": 2})
    _fill(queue, "capped", 10)
    _fill(queue, "free", 10)
    started = _drain(queue)
    assert [item.index for item in started if item.job == "capped"] == [0, 1]
    assert [item.index for item in started if item.job == "free"] == list(range(10))
    assert queue.out("capped") == 2 and len(queue) == 8


def test_a_released_task_lets_its_job_start_the_next_one_and_release_is_idempotent() -> None:
    queue = _queue({"capped": 2})
    _fill(queue, "capped", 5)
    assert _drain(queue) == [Item("capped", 0), Item("capped", 1)]
    queue.release(("capped", 0))
    queue.release(("capped", 0))  # a dead letter after the handler's own release changes nothing
    assert _drain(queue) == [Item("capped", 2)]
    assert queue.out("capped") == 2


def test_a_budgeted_job_alone_waits_instead_of_spinning() -> None:
    queue = _queue({"capped": 1})
    _fill(queue, "capped", 3)
    assert queue.pop() == Item("capped", 0)
    assert queue.pop() is None and len(queue) == 2


def test_a_job_without_a_budget_keeps_no_count_and_its_budget_goes_with_its_last_task() -> None:
    queue = _queue({"capped": 1})
    _fill(queue, "free", 3)
    _drain(queue)
    assert queue.out("free") == 0
    _fill(queue, "capped", 1)
    assert _drain(queue) == [Item("capped", 0)]
    queue.release(("capped", 0))
    assert queue.out("capped") == 0 and not queue._budgets


def test_a_revoked_partition_gives_back_the_slots_of_its_items_out() -> None:
    queue = _queue({"capped": 2})
    _fill(queue, "capped", 4)
    _drain(queue)
    queue.drop(lambda item: item.index == 0)
    assert queue.out("capped") == 1
    assert _drain(queue) == [Item("capped", 2)]


def test_num_threads_is_clamped_to_the_predictors_allowance() -> None:
    assert in_flight_budget(None, 1024) == (None, None)
    assert in_flight_budget(8, 1024) == (8, None)
    assert in_flight_budget(8, None) == (8, None)  # no predictor heartbeat to clamp against
    assert in_flight_budget(5000, 1024) == (1024, 5000)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_num_threads_must_be_a_positive_whole_number(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="num_threads"):
        in_flight_budget(bad, 1024)  # type: ignore[arg-type]


def _status_note(max_in_flight: int | None, asked: int | None) -> str | None:
    job = EvalJob(
        job_id="job-1",
        candidate_ids=["c"],
        metric=MetricSpec(name="exact_match"),
        num_examples=3,
        max_in_flight=max_in_flight,
        max_in_flight_asked=asked,
    )
    meta = JobMeta(job_id="job-1", partition=0, started_at=datetime(2026, 1, 1, tzinfo=UTC).isoformat())
    meta.learn(job)
    restored = JobMeta.from_value("job-1", meta.to_value())  # the note survives the jobs table
    return build_status(restored, {}, state="pending", seq=1, now=datetime(2026, 1, 1, tzinfo=UTC)).note


def test_a_clamped_job_says_so_in_its_status() -> None:
    assert _status_note(1024, 5000) == (
        "asked for 5000 tasks in flight; the predictors allow 1024 each: clamped to 1024"
    )
    assert _status_note(8, None) is None
    assert _status_note(None, None) is None
