from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dspex.errors import DspexError
from dspex.utils.unbatchify import Unbatchify


def test_items_from_many_threads_come_back_to_their_own_callers_in_full_batches() -> None:
    seen_batches: list[list[int]] = []

    def square_all(items: list[int]) -> list[int]:
        seen_batches.append(list(items))
        return [item * item for item in items]

    with (
        Unbatchify(square_all, max_batch_size=4, max_wait_time=5.0) as squarer,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        outputs = list(pool.map(squarer, range(8)))
    assert outputs == [n * n for n in range(8)]
    # With a 5 s wait, only a full batch of 4 ends a batch early: 8 items make exactly two batches.
    assert sorted(len(batch) for batch in seen_batches) == [4, 4]


def test_a_lone_item_is_answered_once_the_wait_after_it_is_over() -> None:
    with Unbatchify(lambda items: [i + 1 for i in items], max_batch_size=10, max_wait_time=0.2) as inc:
        started = time.monotonic()
        assert inc(41) == 42
        took = time.monotonic() - started
    assert 0.15 <= took < 5.0  # waited for company, then gave up on it


def test_an_error_in_the_batch_function_reaches_every_caller_of_that_batch() -> None:
    def refuse(items: list[int]) -> list[int]:
        raise ValueError(f"no batch of {len(items)}")

    with (
        Unbatchify(refuse, max_batch_size=2, max_wait_time=5.0) as call,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        futures = [pool.submit(call, n) for n in range(2)]
        errors = [f.exception(timeout=10) for f in futures]
    assert [str(e) for e in errors] == ["no batch of 2", "no batch of 2"]


def test_a_batch_function_returning_the_wrong_count_is_an_error_not_a_hang() -> None:
    with (
        Unbatchify(lambda items: items[:1], max_batch_size=2, max_wait_time=5.0) as call,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        futures = [pool.submit(call, n) for n in range(2)]
        errors = [f.exception(timeout=10) for f in futures]
    assert all(isinstance(e, DspexError) and "returned 1 outputs for 2 inputs" in str(e) for e in errors)


def test_a_closed_unbatchify_refuses_new_items_and_its_thread_ends() -> None:
    unbatcher = Unbatchify(lambda items: items)
    unbatcher.close()
    assert not unbatcher.worker_thread.is_alive()
    with pytest.raises(DspexError, match="closed"):
        unbatcher(1)


def test_bad_sizes_are_refused_by_name() -> None:
    with pytest.raises(DspexError, match="max_batch_size must be >= 1, got 0"):
        Unbatchify(lambda items: items, max_batch_size=0)
    with pytest.raises(DspexError, match="max_wait_time"):
        Unbatchify(lambda items: items, max_wait_time=-1)
