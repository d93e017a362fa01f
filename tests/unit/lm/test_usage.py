"""Usage sums and trackers, under asyncio and threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from dspex.lm.usage import Usage, active_trackers, record_usage, track_usage


def call(tokens: int) -> Usage:
    return Usage(prompt_tokens=tokens, completion_tokens=1, cost_usd=tokens / 1e6, lm_calls=1)


def test_usage_adds_field_by_field() -> None:
    total = call(10) + call(5) + Usage(lm_calls=1, cache_hits=1)
    assert total.model_copy(update={"cost_usd": 0.0}) == Usage(
        prompt_tokens=15, completion_tokens=2, lm_calls=3, cache_hits=1
    )
    assert total.cost_usd == pytest.approx(15 / 1e6)
    assert total.total_tokens == 17


def test_nested_trackers_each_see_what_ran_inside_them() -> None:
    with track_usage() as outer:
        record_usage(call(1))
        with track_usage() as inner:
            record_usage(call(2))
        record_usage(call(4))
    record_usage(call(8))  # no tracker open: recorded nowhere
    assert outer.usage.prompt_tokens == 7
    assert inner.usage.prompt_tokens == 2
    assert active_trackers() == ()


async def test_trackers_under_gather_do_not_leak_between_tasks() -> None:
    async def task(tokens: int) -> int:
        with track_usage() as mine:
            for _ in range(3):
                await asyncio.sleep(0)  # interleave with the other tasks
                record_usage(call(tokens))
        return mine.usage.prompt_tokens

    with track_usage() as run:
        mine = await asyncio.gather(*(task(n) for n in range(1, 51)))
    assert mine == [3 * n for n in range(1, 51)]
    assert run.usage.prompt_tokens == 3 * sum(range(1, 51))
    assert run.usage.lm_calls == 150


def test_threads_started_with_a_copied_context_add_to_the_same_tracker() -> None:
    def work() -> None:
        for _ in range(1000):
            record_usage(call(1))

    with track_usage() as run:
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(work,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert run.usage.prompt_tokens == 8000
