"""The predictor's fair queue: per-job deficit round robin over fake tasks, and what it buys.

The last tests simulate a predictor (slots freed as fake LM calls of 1 s end) to show the design's
claim on the issue's numbers: a 20-task job arriving 1 s after a 5,000-task one finishes about a
round trip after it arrives with the fair queue, and with the big one in arrival order.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

import pytest

from dspex.processors.fairqueue import PRIORITY_WEIGHTS, FairQueue, job_budget, job_flow, weight_of
from dspex.schemas import PRIORITIES, Task, headers_for
from dspex.streams.flow import Backlog, FifoBacklog


@dataclass(frozen=True)
class Item:
    job: str
    index: int
    weight: int = 4
    size: int = 10
    partition: int = 0


def _queue() -> FairQueue[Item]:
    return FairQueue(lambda item: (item.job, item.weight), lambda item: item.size)


def _drain(queue: Backlog[Item]) -> list[Item]:
    out = []
    while (item := queue.pop()) is not None:
        out.append(item)
    return out


def test_one_job_leaves_in_arrival_order() -> None:
    queue = _queue()
    for index in range(10):
        queue.push(Item("a", index))
    assert [item.index for item in _drain(queue)] == list(range(10))
    assert len(queue) == 0 and queue.nbytes == 0 and queue.pop() is None


def test_a_small_job_behind_a_big_one_is_served_in_the_first_rounds() -> None:
    queue = _queue()
    for index in range(5000):
        queue.push(Item("big", index))
    for index in range(20):
        queue.push(Item("small", index))
    order = _drain(queue)
    last_small = max(position for position, item in enumerate(order) if item.job == "small")
    assert last_small < 40  # equal weights: every other task, not after 5,000
    assert [item.index for item in order if item.job == "big"] == list(range(5000))  # each exactly once


def test_priorities_share_in_proportion_to_their_weights_and_bulk_is_not_starved() -> None:
    queue = _queue()
    for priority in PRIORITIES:
        for index in range(1000):
            queue.push(Item(priority, index, weight=weight_of(priority)))
    first_round_robin = Counter(item.job for item in _drain(queue)[:210])  # ten rounds of 16 + 4 + 1
    assert first_round_robin == {"interactive": 160, "normal": 40, "bulk": 10}


def test_a_job_that_arrives_waits_at_most_one_round() -> None:
    queue = _queue()
    for job in ("a", "b", "c"):
        for index in range(100):
            queue.push(Item(job, index))
    queue.pop()  # a's turn has begun
    queue.push(Item("late", 0))
    order = _drain(queue)
    assert [item.job for item in order].index("late") <= 3 + 4 + 4  # the rest of a's turn, b's and c's


def test_a_job_whose_queue_empties_keeps_no_credit() -> None:
    queue = _queue()
    queue.push(Item("a", 0, weight=16))
    queue.push(Item("b", 0))
    assert queue.pop() == Item("a", 0, weight=16)  # a leaves with 15 unused
    queue.push(Item("a", 1, weight=16))  # comes back at the end of the round, credit gone
    assert [item.job for item in _drain(queue)] == ["b", "a"]


def test_drop_forgets_a_revoked_partition_and_keeps_counts_and_turns_right() -> None:
    queue = _queue()
    for index in range(6):
        queue.push(Item("a", index, partition=index % 2))
        queue.push(Item("b", index, partition=1))
    assert queue.pop() == Item("a", 0, partition=0)
    queue.drop(lambda item: item.partition == 1)
    assert len(queue) == 2 and queue.nbytes == 20
    assert queue.queued() == {"a": 2}
    assert [item.index for item in _drain(queue)] == [2, 4]


def test_clear_empties_everything() -> None:
    queue = _queue()
    for index in range(3):
        queue.push(Item("a", index))
        queue.push(Item("b", index))
    queue.clear()
    assert len(queue) == 0 and queue.nbytes == 0 and queue.pop() is None and queue.queued() == {}


def test_the_latest_weight_of_a_job_counts() -> None:
    queue = _queue()
    queue.push(Item("a", 0, weight=1))
    queue.push(Item("a", 1, weight=16))
    for index in range(20):
        queue.push(Item("b", index, weight=1))
    order = [item.job for item in _drain(queue)]
    assert order[:3] == ["a", "a", "b"]


def test_weights_cover_every_priority_and_unknown_names_count_as_normal() -> None:
    assert set(PRIORITY_WEIGHTS) == set(PRIORITIES)
    assert PRIORITY_WEIGHTS["interactive"] > PRIORITY_WEIGHTS["normal"] > PRIORITY_WEIGHTS["bulk"] >= 1
    assert weight_of(None) == weight_of("urgent") == PRIORITY_WEIGHTS["normal"]


class _FakeMessage:
    def __init__(self, headers: list[tuple[str, bytes]] | None) -> None:
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def test_job_flow_reads_the_job_and_priority_headers_without_decoding() -> None:
    task = Task.build(
        job_id="j1", candidate_id="c", example_index=0, example={"q": 1}, input_keys=["q"], priority="bulk"
    )
    assert job_flow(_FakeMessage(headers_for(task))) == ("j1", PRIORITY_WEIGHTS["bulk"])  # type: ignore[arg-type]
    plain = Task.build(job_id="j2", candidate_id="c", example_index=0, example={"q": 1}, input_keys=["q"])
    assert job_flow(_FakeMessage(headers_for(plain))) == ("j2", PRIORITY_WEIGHTS["normal"])  # type: ignore[arg-type]
    assert job_flow(_FakeMessage(None)) == ("", PRIORITY_WEIGHTS["normal"])  # type: ignore[arg-type]


def test_flow_headers_read_as_the_header_helpers_do() -> None:
    # the first of a repeated header wins even when unreadable; a budget must be a positive integer
    repeated = [("dspex-job-id", b"\xff"), ("dspex-job-id", b"j9"), ("dspex-priority", b"bulk")]
    assert job_flow(_FakeMessage(repeated)) == ("", PRIORITY_WEIGHTS["bulk"])  # type: ignore[arg-type]
    for raw, budget in [(b"16", 16), (b"0", None), (b"-3", None), ("\u0663".encode(), None), (b"x", None)]:
        message = _FakeMessage([("dspex-job-id", b"j1"), ("dspex-max-in-flight", raw)])
        assert job_flow(message) == ("j1", PRIORITY_WEIGHTS["normal"])  # type: ignore[arg-type]
        assert job_budget(message) == budget  # type: ignore[arg-type]
    task = Task.build(
        job_id="j2", candidate_id="c", example_index=0, example={"q": 1}, input_keys=["q"], max_in_flight=8
    )
    assert job_budget(_FakeMessage(headers_for(task))) == 8  # type: ignore[arg-type]
    assert job_budget(_FakeMessage(None)) is None  # type: ignore[arg-type]


# --------------------------------------------------------------------------- a simulated predictor


def _finish_times(backlog: Backlog[Item], arrivals: list[tuple[float, Item]], slots: int) -> dict[str, float]:
    """When each job's last task ends: tasks start from ``backlog`` as ``slots`` free; each takes 1 s."""
    pending = sorted(arrivals, key=lambda arrival: arrival[0])
    running: list[tuple[float, str]] = []
    finished: dict[str, float] = {}
    now = 0.0
    while pending or running or len(backlog):
        while pending and pending[0][0] <= now:
            backlog.push(pending.pop(0)[1])
        while len(running) < slots and (item := backlog.pop()) is not None:
            heapq.heappush(running, (now + 1.0, item.job))
        next_arrival = pending[0][0] if pending else float("inf")
        if running and running[0][0] <= next_arrival:
            now, job = heapq.heappop(running)
            finished[job] = now
        else:
            now = next_arrival
    return finished


def _issue_workload() -> list[tuple[float, Item]]:
    big = [(0.0, Item("big", index)) for index in range(5000)]
    return big + [(1.0, Item("small", index)) for index in range(20)]


def test_simulated_small_job_finishes_a_round_trip_after_it_arrives_with_the_fair_queue() -> None:
    finished = _finish_times(_queue(), _issue_workload(), slots=256)
    assert finished["small"] - 1.0 <= 2.0  # it arrived at 1 s; alone it takes 1 s
    assert finished["big"] >= 19.0


@pytest.mark.parametrize("priority", ["bulk", "normal", "interactive"])
def test_simulated_small_job_is_fast_at_any_priority_while_the_big_one_is_normal(priority: str) -> None:
    workload = [
        (at, Item(item.job, item.index, weight=weight_of(priority) if item.job == "small" else 4))
        for at, item in _issue_workload()
    ]
    finished = _finish_times(_queue(), workload, slots=256)
    assert finished["small"] - 1.0 <= 2.0


def test_simulated_arrival_order_is_what_the_issue_measured() -> None:
    finished = _finish_times(FifoBacklog(), _issue_workload(), slots=256)
    assert finished["small"] >= finished["big"] - 1.0  # stuck behind every task of the big job
