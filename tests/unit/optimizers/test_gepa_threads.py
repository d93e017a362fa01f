"""GEPA's helper threads: reused across calls, at most ``at_once`` calls at a time, each call with
the caller's context, every call ended before a failure is raised."""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar

import pytest

from dspex.optimizers.gepa import _threads

WHO: ContextVar[str] = ContextVar("WHO", default="nobody")


def test_calls_reuse_idle_threads_instead_of_starting_new_ones() -> None:
    _threads.run_all([lambda: None, lambda: None])  # the pool has threads from here on
    names: set[str] = set()
    for _ in range(20):
        names.update(_threads.run_all([lambda: threading.current_thread().name for _ in range(2)]))
    # a thread per call would be 40 names; reused ones are the pool's idle threads (a few, unless
    # an earlier test had many calls at once)
    assert len(names) < 40


def test_at_once_bounds_the_calls_in_flight_and_keeps_the_order() -> None:
    lock, in_flight, most = threading.Lock(), [0], [0]

    def call(n: int) -> int:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.01)
        with lock:
            in_flight[0] -= 1
        return n

    assert _threads.run_all([lambda n=n: call(n) for n in range(9)], at_once=3) == list(range(9))
    assert most[0] == 3


def test_each_call_runs_in_the_callers_context() -> None:
    token = WHO.set("caller")
    try:
        assert _threads.run_all([WHO.get, WHO.get], at_once=1) == ["caller", "caller"]
        assert _threads.start(WHO.get).result() == "caller"
    finally:
        WHO.reset(token)


def test_the_first_failure_is_raised_after_every_call_ended() -> None:
    ended: list[int] = []

    def slow() -> None:
        time.sleep(0.05)
        ended.append(1)

    def fail() -> None:
        raise ValueError("first")

    with pytest.raises(ValueError, match="first"):
        _threads.run_all([fail, slow, slow], at_once=2)
    assert ended == [1, 1]
