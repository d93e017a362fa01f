"""The adaptive limiter's optional fixed caps: requests per second and tokens per minute."""

from __future__ import annotations

import asyncio
import time

from dspex.lm.limiter import AdaptiveLimiter


async def test_requests_per_second_cap_paces_calls() -> None:
    limiter = AdaptiveLimiter(initial=64, maximum=64, max_rps=50)
    started = time.monotonic()

    async def call() -> None:
        async with limiter.slot():
            pass

    await asyncio.gather(*(call() for _ in range(75)))
    # 50 go at once (one second of burst), the other 25 at 50/s: about half a second (the upper
    # bound is loose, for a loaded machine; unpaced, the lower one fails)
    assert 0.4 <= time.monotonic() - started < 5.0


async def test_tokens_per_minute_cap_waits_for_the_debt_to_clear() -> None:
    limiter = AdaptiveLimiter(initial=8, maximum=8, max_tpm=6000)  # 100 tokens/s, 1,000 buckets
    async with limiter.slot():
        pass
    limiter.record_tokens(1100)  # overdraws by 100: the next call waits about a second
    started = time.monotonic()
    async with limiter.slot():
        pass
    assert 0.8 <= time.monotonic() - started < 5.0  # loose above: a loaded machine adds, never removes


async def test_no_caps_means_no_pacing() -> None:
    limiter = AdaptiveLimiter(initial=4, maximum=4)
    limiter.record_tokens(10**9)
    started = time.monotonic()
    for _ in range(100):
        async with limiter.slot():
            pass
    assert time.monotonic() - started < 2.0  # no cap: no wait (a token cap would make it hours)
