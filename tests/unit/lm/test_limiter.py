"""The adaptive concurrency limiter: slow start, then AIMD."""

from __future__ import annotations

import asyncio

import pytest

from dspex.errors import ConfigurationError, LMRateLimitError, LMServerError, LMTimeoutError
from dspex.lm.limiter import AdaptiveLimiter


def test_success_grows_additively_up_to_the_maximum() -> None:
    limiter = AdaptiveLimiter(initial=4, maximum=6, cooldown_s=0, slow_start=False)
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


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _settle() -> None:
    # Let every task that was just handed a slot (or woken to ask for one) run up to its next wait.
    for _ in range(5):
        await asyncio.sleep(0)


async def _in_flight_per_round_trip(limiter: AdaptiveLimiter, clock: FakeClock, rounds: int) -> list[int]:
    """Callers always waiting (a backlog of 2,048); every round trip (0.1 s on the fake clock) each call
    in flight succeeds. Returns the calls in flight at the start of round trip 0, 1, ..., ``rounds``."""
    loop = asyncio.get_running_loop()
    round_trip = [loop.create_future()]

    async def call() -> None:
        async with limiter.slot():
            await round_trip[0]  # the round trip current when this call got its slot

    callers = [asyncio.ensure_future(call()) for _ in range(2048)]
    await _settle()
    seen = [limiter.in_flight]
    for _ in range(rounds):
        clock.now += 0.1
        ending, round_trip[0] = round_trip[0], loop.create_future()
        ending.set_result(None)
        await _settle()
        seen.append(limiter.in_flight)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    return seen


async def test_slow_start_reaches_1024_in_flight_within_6_round_trips() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(clock=clock)  # the default initial limit (16)
    seen = await _in_flight_per_round_trip(limiter, clock, rounds=6)
    assert seen == [16, 32, 64, 128, 256, 512, 1024]  # doubles per round trip
    assert limiter.in_slow_start and limiter.limit == 1024


async def test_the_first_429_ends_slow_start_and_halves() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(initial=16, cooldown_s=1.0, clock=clock)
    assert await _in_flight_per_round_trip(limiter, clock, rounds=2) == [16, 32, 64]
    with pytest.raises(LMRateLimitError):
        async with limiter.slot():
            raise LMRateLimitError("429", retry_after=None)
    assert limiter.limit == 32 and not limiter.in_slow_start
    clock.now += 1.0  # past the cooldown
    # AIMD: a full window adds 1/limit per success, just under one slot per round trip.
    assert await _in_flight_per_round_trip(limiter, clock, rounds=2) == [32, 32, 33]


async def test_a_timeout_ends_slow_start_too() -> None:
    limiter = AdaptiveLimiter(initial=16, cooldown_s=0, clock=FakeClock())
    with pytest.raises(LMTimeoutError):
        async with limiter.slot():
            raise LMTimeoutError("t")
    assert limiter.limit == 8 and not limiter.in_slow_start


def test_slow_start_grows_only_while_half_the_limit_is_in_use() -> None:
    limiter = AdaptiveLimiter(initial=16, clock=FakeClock())
    for _ in range(100):
        limiter.record_success()  # nothing in flight: no evidence the endpoint takes more
    assert limiter.limit == 16 and limiter.in_slow_start


async def test_slow_start_stops_at_the_maximum() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(initial=16, maximum=100, clock=clock)
    seen = await _in_flight_per_round_trip(limiter, clock, rounds=4)
    assert seen == [16, 32, 64, 100, 100]


async def test_a_retry_after_holds_the_limit_past_the_cooldown() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(initial=64, cooldown_s=1.0, clock=clock)
    limiter.record_overload(retry_after=5.0)
    clock.now += 3.0  # past cooldown_s, not past the Retry-After
    assert await _in_flight_per_round_trip(limiter, clock, rounds=1) == [32, 32]
