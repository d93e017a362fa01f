"""Contiguous commits, watermarks and the membership watch: the bookkeeping the consumer runtime trusts."""

from __future__ import annotations

import random

import pytest

from dspex.errors import ConfigurationError
from dspex.streams.flow import MembershipWatch, OffsetTracker, Watermarks

TP = ("tasks", 3)


def started(tracker: OffsetTracker, *offsets: int, tp: tuple[str, int] = TP) -> None:
    for offset in offsets:
        tracker.started(tp, offset)


def test_nothing_is_committable_until_the_oldest_message_finishes() -> None:
    tracker = OffsetTracker()
    started(tracker, 10, 11, 12)
    tracker.finished(TP, 12)
    tracker.finished(TP, 11)
    assert tracker.committable(TP) is None
    tracker.finished(TP, 10)
    assert tracker.committable(TP) == 13


def test_commit_stops_before_the_first_unfinished_message() -> None:
    tracker = OffsetTracker()
    started(tracker, 0, 1, 2, 3, 4)
    for offset in (0, 1, 3, 4):
        tracker.finished(TP, offset)
    assert tracker.committable(TP) == 2
    assert tracker.in_progress(TP) == 1  # only 2 is running; 3 and 4 wait behind it, done
    tracker.finished(TP, 2)
    assert tracker.committable(TP) == 5
    assert tracker.in_progress(TP) == 0


def test_gaps_in_offsets_do_not_block_commits() -> None:
    # Compaction and transaction markers leave holes; only offsets we received count.
    tracker = OffsetTracker()
    started(tracker, 5, 9, 20)
    tracker.finished(TP, 5)
    tracker.finished(TP, 9)
    assert tracker.committable(TP) == 10


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    other = ("tasks", 4)
    started(tracker, 0, 1)
    started(tracker, 0, 1, tp=other)
    tracker.finished(other, 0)
    tracker.finished(other, 1)
    assert tracker.committable(TP) is None
    assert tracker.committable(other) == 2


def test_pending_commits_only_reports_offsets_that_moved() -> None:
    tracker = OffsetTracker()
    started(tracker, 0, 1, 2)
    tracker.finished(TP, 0)
    assert tracker.pending_commits() == {TP: 1}
    tracker.mark_committed({TP: 1})
    assert tracker.pending_commits() == {}
    tracker.finished(TP, 1)
    assert tracker.pending_commits() == {TP: 2}


def test_forgotten_partitions_ignore_late_finishes() -> None:
    tracker = OffsetTracker()
    started(tracker, 0, 1)
    tracker.forget([TP])
    tracker.finished(TP, 0)
    assert tracker.committable(TP) is None
    assert tracker.partitions() == []


def test_repeated_finish_is_harmless() -> None:
    tracker = OffsetTracker()
    started(tracker, 0, 1)
    tracker.finished(TP, 1)
    tracker.finished(TP, 1)
    tracker.finished(TP, 0)
    assert tracker.committable(TP) == 2


def test_random_completion_order_never_commits_past_an_unfinished_offset() -> None:
    rng = random.Random(7)
    tracker = OffsetTracker()
    offsets = list(range(500))
    started(tracker, *offsets)
    order = offsets[:]
    rng.shuffle(order)
    finished: set[int] = set()
    for offset in order:
        tracker.finished(TP, offset)
        finished.add(offset)
        commit = tracker.committable(TP)
        expected = next((o for o in offsets if o not in finished), len(offsets))
        assert (commit or 0) == expected
    assert tracker.committable(TP) == 500


def test_watermarks_pause_at_high_and_resume_at_low_only() -> None:
    marks = Watermarks(high=64, low=32)
    assert marks.update(63) is None
    assert marks.update(64) == "pause"
    assert marks.update(70) is None  # already paused: no second pause
    assert marks.update(40) is None  # between the marks: stay paused (hysteresis)
    assert marks.update(32) == "resume"
    assert marks.update(50) is None
    assert marks.update(64) == "pause"


@pytest.mark.parametrize(("high", "low"), [(0, 0), (10, 10), (10, 11), (10, -1)])
def test_watermarks_refuse_inconsistent_values(high: int, low: int) -> None:
    with pytest.raises(ConfigurationError, match="watermarks"):
        Watermarks(high=high, low=low)


# ---------------------------------------------------------------- MembershipWatch


def test_a_member_in_its_group_is_never_stuck() -> None:
    watch = MembershipWatch(stuck_after=60)
    assert not any(watch.observe("up", "steady", now) for now in range(0, 600, 5))


def test_a_member_out_of_its_group_past_the_limit_is_stuck_once_per_limit() -> None:
    watch = MembershipWatch(stuck_after=60)
    verdicts = {now: watch.observe("query-coord", "init", now) for now in range(100, 230, 5)}
    assert [now for now, stuck in verdicts.items() if stuck] == [160, 220]


def test_coming_back_to_the_group_resets_the_count() -> None:
    watch = MembershipWatch(stuck_after=60)
    assert not watch.observe("up", "wait-join", 0)
    assert not watch.observe("up", "wait-join", 55)
    assert not watch.observe("up", "steady", 58)  # a rebalance that completed in time
    assert not watch.observe("up", "wait-sync", 100)
    assert not watch.observe("up", "wait-sync", 159)
    assert watch.observe("up", "wait-sync", 160)


def test_statistics_without_a_group_state_count_as_out() -> None:
    watch = MembershipWatch(stuck_after=10)
    assert not watch.observe(None, None, 0)
    assert watch.observe(None, None, 10)


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="stuck_after"):
        MembershipWatch(stuck_after=0)
