"""The circuit breaker per LM endpoint, and how the retry loop treats an outage."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from lm_served import served_v1

from dspex.errors import ConfigurationError, LMConnectionError
from dspex.lm import LM
from dspex.lm.breaker import BreakerState, CircuitBreaker
from dspex.lm.retry import RetryPolicy, with_retries


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker("http://x/v1", failure_threshold=3, open_s=60, max_open_s=60)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.opened == 1


async def test_calls_wait_while_open_and_one_probe_closes_it() -> None:
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(
        "http://x/v1", failure_threshold=1, open_s=0.05, on_change=lambda _b, s: changes.append(s)
    )

    async def acquire_and_time() -> tuple[bool, float]:
        return await breaker.acquire(), time.monotonic()

    before_open = time.monotonic()
    breaker.record_failure()
    waiting = [asyncio.create_task(acquire_and_time()) for _ in range(5)]
    done, pending = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    # exactly one probe, and not before open_s (when it went, not a check right after opening,
    # which a loaded machine can delay past open_s)
    [(probe, went_at)] = [task.result() for task in done]
    assert probe is True and went_at - before_open >= 0.05
    assert breaker.state == "half_open"
    await asyncio.sleep(0.1)
    assert len(pending) == 4 and not any(task.done() for task in pending)  # they wait on the probe
    breaker.record_success(probe=True)
    assert [probe for probe, _ in await asyncio.gather(*pending)] == [False] * 4
    assert breaker.state == "closed"
    assert changes == ["open", "half_open", "closed"]


async def test_a_failed_probe_reopens_for_longer() -> None:
    breaker = CircuitBreaker("http://x/v1", failure_threshold=1, open_s=0.02, max_open_s=0.05)
    breaker.record_failure()
    assert await breaker.acquire() is True
    breaker.record_failure(probe=True)
    assert breaker.state == "open"
    assert breaker._open_for == pytest.approx(0.04)
    assert await breaker.acquire() is True
    breaker.record_failure(probe=True)
    assert breaker._open_for == pytest.approx(0.05)  # capped at max_open_s
    assert breaker.opened == 3


async def test_an_abandoned_probe_lets_another_call_probe() -> None:
    breaker = CircuitBreaker("http://x/v1", failure_threshold=1, open_s=0.01)
    breaker.record_failure()
    assert await breaker.acquire() is True
    second = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0.02)
    assert not second.done()
    breaker.abandon(True)
    assert await asyncio.wait_for(second, 10.0) is True


async def test_an_outage_does_not_use_up_retries() -> None:
    """Ten failures in a row with max_retries=2 still succeed: the breaker turned them into waiting."""
    breaker = CircuitBreaker("http://x/v1", failure_threshold=2, open_s=0.001, max_open_s=0.002)
    outcomes = iter([LMConnectionError("down")] * 10 + ["ok"])

    async def attempt() -> str:
        probe = await breaker.acquire()
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            breaker.record_failure(probe)
            raise outcome
        breaker.record_success(probe)
        return outcome

    policy = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.001)
    assert await with_retries(attempt, policy, breaker=breaker) == "ok"
    assert breaker.state == "closed"


async def test_without_an_outage_retries_still_run_out() -> None:
    breaker = CircuitBreaker("http://x/v1", failure_threshold=100)
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        breaker.record_failure()
        raise LMConnectionError("flaky")

    policy = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.001)
    with pytest.raises(LMConnectionError):
        await with_retries(attempt, policy, breaker=breaker)
    assert calls == 3


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ConfigurationError):
        CircuitBreaker("x", open_s=5, max_open_s=1)


async def test_an_lm_call_waits_for_its_open_breaker_then_probes_it_closed() -> None:
    """The LM asks its breaker without waiting first; an open one still holds the call until the
    probe may go, and the answered probe closes it."""
    answered: list[float] = []

    async def chat(request: web.Request) -> web.Response:
        answered.append(time.monotonic())
        return web.json_response({"choices": [{"message": {"content": "hello"}}], "usage": {}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with served_v1(app) as base:
        breaker = CircuitBreaker(base, failure_threshold=1, open_s=0.2)
        lm = LM("openai/sim-chat", api_base=base, cache=False, breaker=breaker)
        breaker.record_failure()
        opened = time.monotonic()
        assert (await lm.acomplete([{"role": "user", "content": "hi"}])).text == "hello"
        assert answered[0] - opened >= 0.15  # held until the breaker let its probe go
        assert breaker.state == "closed"
        assert (await lm.acomplete([{"role": "user", "content": "again"}])).text == "hello"
        assert len(answered) == 2
