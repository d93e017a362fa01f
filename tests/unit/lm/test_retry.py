"""Retry-After parsing, error mapping and the retry loop (with a recorded, instant sleep)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from dspex.errors import (
    ConfigurationError,
    LMAuthenticationError,
    LMConnectionError,
    LMError,
    LMNotFoundError,
    LMRateLimitError,
    LMRequestError,
    LMServerError,
    LMTimeoutError,
)
from dspex.lm.retry import (
    RetryPolicy,
    backoff_delay,
    error_for_status,
    parse_retry_after,
    provider_message,
    retry_after_delay,
    retry_after_from_headers,
    with_retries,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 3 ", 3.0), ("1.5", 1.5), ("-4", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_retry_after_as_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(datetime.fromtimestamp(NOW + 42, tz=UTC), usegmt=True)
    earlier = format_datetime(datetime.fromtimestamp(NOW - 42, tz=UTC), usegmt=True)
    assert parse_retry_after(later, now=NOW) == pytest.approx(42.0)
    assert parse_retry_after(earlier, now=NOW) == 0.0


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after_from_headers({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_from_headers({"retry-after-ms": "x", "retry-after": "9"}) == 9.0
    assert retry_after_from_headers({}) is None


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, LMRequestError),
        (401, LMAuthenticationError),
        (403, LMAuthenticationError),
        (404, LMNotFoundError),
        (413, LMRequestError),
        (422, LMRequestError),
        (429, LMRateLimitError),
        (500, LMServerError),
        (503, LMServerError),
    ],
)
def test_every_status_maps_to_its_error(status: int, error: type[LMError]) -> None:
    found = error_for_status(
        status, '{"error": {"message": "nope"}}', {}, model="m/x", api_base="http://h/v1"
    )
    assert type(found) is error
    assert found.status == status and found.model == "m/x" and found.api_base == "http://h/v1"
    assert "nope" in str(found) and str(status) in str(found)


def test_provider_message_shapes_and_redaction() -> None:
    assert provider_message('{"error": {"message": "bad key sk-123"}}', secret="sk-123") == "bad key ***"
    assert provider_message('{"error": "flat"}') == "flat"
    assert provider_message('{"message": "top"}') == "top"
    assert provider_message("<html>gateway</html>") == "<html>gateway</html>"
    assert provider_message("") == "(empty response body)"
    assert len(provider_message("x" * 10_000)) == 500


def test_full_jitter_backoff_stays_under_its_ceiling() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(7)
    for attempt in range(10):
        ceiling = min(4.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, policy, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # jitter spreads over the range, not pinned at 0


class Scripted:
    """An attempt function raising the scripted errors in order, then returning "ok"."""

    def __init__(self, errors: list[LMError]) -> None:
        self.errors = errors
        self.calls = 0
        self.slept: list[float] = []

    async def attempt(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def run(self, policy: RetryPolicy) -> str:
        return await with_retries(self.attempt, policy, sleep=self.sleep, rng=random.Random(1))


def rate_limit(after: float | None = 1.0) -> LMRateLimitError:
    return LMRateLimitError("429", status=429, retry_after=after)


async def test_429s_wait_retry_after_and_do_not_count_as_retries() -> None:
    script = Scripted([rate_limit(2.0) for _ in range(20)])
    assert await script.run(RetryPolicy(max_retries=0)) == "ok"
    assert script.calls == 21 and len(script.slept) == 20
    assert all(2.0 <= d <= 2.5 for d in script.slept)  # never sooner than asked, jittered after


@pytest.mark.parametrize(
    ("retry_after", "low", "high", "max_delay"),
    [
        (2.0, 2.0, 2.5, 20.0),  # a quarter of the wait
        (0.0, 0.0, 0.125, 20.0),  # a quarter of base_delay (0.5 s) when the wait is shorter
        (0.01, 0.01, 0.135, 20.0),
        (60.0, 60.0, 75.0, 20.0),
        (60.0, 60.0, 62.0, 2.0),  # never more than max_delay
    ],
)
def test_retry_after_jitter_bounds(retry_after: float, low: float, high: float, max_delay: float) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=max_delay)
    rng = random.Random(3)
    delays = [retry_after_delay(retry_after, policy, rng) for _ in range(2_000)]
    assert all(low <= d <= high for d in delays)
    assert min(delays) < low + (high - low) * 0.05 and max(delays) > high - (high - low) * 0.05


async def test_a_herd_refused_at_once_comes_back_spread_out() -> None:
    # 1,000 calls answered 429 "Retry-After: 1" at the same instant: none retries sooner than 1 s,
    # and no 12.5 ms slice of the 250 ms window after it gets more than a tenth of them.
    herd = [Scripted([rate_limit(1.0)]) for _ in range(1_000)]
    rng = random.Random(5)
    for script in herd:
        await with_retries(script.attempt, RetryPolicy(), sleep=script.sleep, rng=rng)
    waits = [script.slept[0] for script in herd]
    assert all(1.0 <= w <= 1.25 for w in waits)
    slices = [sum(1.0 + i / 80 <= w < 1.0 + (i + 1) / 80 for w in waits) for i in range(20)]
    assert max(slices) < 100  # uniform: ~50 a slice; without jitter all 1,000 land in the first


async def test_429_without_retry_after_backs_off() -> None:
    script = Scripted([rate_limit(None) for _ in range(3)])
    await script.run(RetryPolicy(max_retries=0, base_delay=0.1, max_delay=1.0))
    assert len(script.slept) == 3 and all(0 <= d <= 1.0 for d in script.slept)


async def test_the_rate_limit_budget_bounds_the_total_wait() -> None:
    script = Scripted([rate_limit(30.0) for _ in range(100)])
    with pytest.raises(LMRateLimitError, match="budget is 100s"):
        await script.run(RetryPolicy(rate_limit_budget_s=100.0))
    # each wait is 30 s plus up to 7.5 s of jitter: two or three fit in 100 s, never more
    assert 2 <= len(script.slept) <= 3 and sum(script.slept) <= 100.0
    assert all(30.0 <= d <= 37.5 for d in script.slept)


def test_a_negative_retry_after_jitter_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="retry_after_jitter"):
        RetryPolicy(retry_after_jitter=-0.1)


@pytest.mark.parametrize(
    "make",
    [lambda: LMServerError("5xx", status=500), lambda: LMTimeoutError("t"), lambda: LMConnectionError("c")],
)
async def test_transient_errors_use_up_max_retries(make: Callable[[], LMError]) -> None:
    script = Scripted([make() for _ in range(10)])
    with pytest.raises(type(make())):
        await script.run(RetryPolicy(max_retries=3))
    assert script.calls == 4 and len(script.slept) == 3


async def test_a_mixed_storm_counts_only_the_transient_errors() -> None:
    errors: list[LMError] = [rate_limit(0.0), LMServerError("5xx"), rate_limit(0.0), LMTimeoutError("t")]
    script = Scripted(errors * 3)
    with pytest.raises(LMServerError):
        await script.run(RetryPolicy(max_retries=2))
    assert script.calls == 6  # 429, 500, 429, timeout, 429, 500 (third transient: out of retries)


async def test_request_errors_are_never_retried() -> None:
    script = Scripted([LMAuthenticationError("401", status=401)])
    with pytest.raises(LMAuthenticationError):
        await script.run(RetryPolicy(max_retries=5))
    assert script.calls == 1 and script.slept == []
