"""The consumer's backlog (arrival order by default) and the byte budget of its watermarks."""

from __future__ import annotations

from dspex.streams.flow import FifoBacklog, Watermarks


def test_fifo_backlog_keeps_arrival_order_and_counts_bytes() -> None:
    backlog: FifoBacklog[str] = FifoBacklog(len)
    for item in ("a", "bb", "ccc"):
        backlog.push(item)
    assert (len(backlog), backlog.nbytes) == (3, 6)
    assert backlog.pop() == "a"
    backlog.drop(lambda item: item == "bb")
    assert (len(backlog), backlog.nbytes) == (1, 3)
    assert backlog.pop() == "ccc" and backlog.pop() is None
    backlog.push("dd")
    backlog.clear()
    assert (len(backlog), backlog.nbytes) == (0, 0)


def test_a_full_byte_budget_pauses_and_only_half_of_it_resumes() -> None:
    marks = Watermarks(high=100, low=50)
    assert marks.update(10, fill=0.9) is None
    assert marks.update(10, fill=1.0) == "pause"
    assert marks.update(10, fill=0.6) is None  # under the budget, not yet under half of it
    assert not marks.has_room(10, 0.6)
    assert marks.update(10, fill=0.5) == "resume"


def test_messages_still_pause_without_a_byte_budget() -> None:
    marks = Watermarks(high=100, low=50)
    assert marks.update(100) == "pause"
    assert marks.update(60, fill=0.0) is None
    assert marks.update(50) == "resume"
