"""The adaptive (AIMD) concurrency limiter."""

from __future__ import annotations

import asyncio

import pytest

from dspex.errors import ConfigurationError, LMRateLimitError, LMServerError, LMTimeoutError
from dspex.lm.limiter import AdaptiveLimiter


def test_success_grows_additively_up_to_the_maximum() -> None:
    limiter = AdaptiveLimiter(initial=4, maximum=6, cooldown_s=0)
    for _ in range(3):
        limiter.record_success()
    assert limiter.limit == 4  # +1/limit per success: a part of a window adds less than one
    for _ in range(2):
        limiter.record_success()
    assert limiter.limit == 5  # about one full window (4 + 1/4 + 1/4.25 + ...) adds one
    for _ in range(100):
        limiter.record_success()
    assert limiter.limit == 6


def test_overload_cuts_once_per_cooldown_and_holds_growth() -> None:
    limiter = AdaptiveLimiter(initial=64, minimum=4, cooldown_s=60)
    for _ in range(10):  # one burst of 429s from the same window
        limiter.record_overload()
    assert limiter.limit == 32
    for _ in range(100):
        limiter.record_success()
    assert limiter.limit == 32  # still cooling down


def test_the_limit_never_falls_below_the_minimum() -> None:
    limiter = AdaptiveLimiter(initial=8, minimum=3, cooldown_s=0)
    for _ in range(10):
        limiter.record_overload()
    assert limiter.limit == 3


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        AdaptiveLimiter(initial=2, minimum=4)
    with pytest.raises(ConfigurationError):
        AdaptiveLimiter(decrease=1.5)


async def test_in_flight_never_exceeds_the_limit() -> None:
    limiter = AdaptiveLimiter(initial=5, maximum=5)
    peak = 0

    async def call() -> None:
        nonlocal peak
        async with limiter.slot():
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0.001)

    await asyncio.gather(*(call() for _ in range(100)))
    assert peak == 5 and limiter.in_flight == 0


async def test_slot_outcomes_steer_the_limit() -> None:
    limiter = AdaptiveLimiter(initial=16, cooldown_s=0)
    with pytest.raises(LMRateLimitError):
        async with limiter.slot():
            raise LMRateLimitError("429", retry_after=0.0)
    assert limiter.limit == 8
    with pytest.raises(LMTimeoutError):
        async with limiter.slot():
            raise LMTimeoutError("t")
    assert limiter.limit == 4
    with pytest.raises(LMServerError):  # a 500 is not overload: no verdict
        async with limiter.slot():
            raise LMServerError("500")
    assert limiter.limit == 4 and limiter.in_flight == 0


async def test_a_cancelled_waiter_does_not_leak_its_slot() -> None:
    limiter = AdaptiveLimiter(initial=1, maximum=1)
    await limiter.acquire()
    waiter = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    limiter.release()  # hands the slot to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_flight == 0
    await asyncio.wait_for(limiter.acquire(), timeout=1)


async def test_a_limiter_is_shared_across_event_loops_in_threads() -> None:
    limiter = AdaptiveLimiter(initial=2, maximum=2)

    async def hold() -> None:
        async with limiter.slot():
            await asyncio.sleep(0.01)

    async def many() -> None:
        await asyncio.gather(*(hold() for _ in range(20)))

    def other_loop() -> None:
        asyncio.run(asyncio.wait_for(many(), timeout=10))

    await asyncio.gather(asyncio.to_thread(other_loop), *(hold() for _ in range(20)))
    assert limiter.in_flight == 0
