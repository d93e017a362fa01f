"""When to retry an LM call, how long to wait, and which error an HTTP status becomes.

- 5xx, timeouts and connection errors are transient: retried up to ``max_retries`` times with
  exponential backoff and full jitter (a uniform wait in ``[0, min(max_delay, base_delay * 2**n)]``,
  so that many clients failing together do not come back together).
- 429 is flow control, not failure: the call waits at least what ``Retry-After`` (or OpenAI's
  ``retry-after-ms``) says, plus a uniform jitter of up to ``retry_after_jitter`` (25%) of that wait
  (of ``base_delay`` when the wait is shorter; at most ``max_delay``), so a thousand calls refused
  in the same instant come back spread over a window instead of all at once; without a header, a
  backoff. It retries *without* using up ``max_retries``. What bounds it is the total time spent
  waiting on 429s (``rate_limit_budget_s``); past it, LMRateLimitError.
- Any other 4xx is the request's own fault: raised at once, with the provider's message.
- With a circuit breaker (:mod:`dspex.lm.breaker`), a transient failure that finds the breaker
  open is an outage, not this call's failure: the call starts its retries afresh and its next
  attempt waits for the breaker to close, so an outage delays calls instead of failing them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, TypeVar

from dspex.errors import (
    ConfigurationError,
    ContextWindowExceededError,
    LMAuthenticationError,
    LMBillingError,
    LMConnectionError,
    LMError,
    LMNotFoundError,
    LMRateLimitError,
    LMRequestError,
    LMServerError,
    LMTimeoutError,
)

if TYPE_CHECKING:
    from dspex.lm.breaker import CircuitBreaker

__all__ = [
    "RetryPolicy",
    "backoff_delay",
    "error_for_status",
    "parse_retry_after",
    "provider_message",
    "retry_after_delay",
    "retry_after_from_headers",
    "with_retries",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_MESSAGE_CHARS = 500
_TRANSIENT = (LMServerError, LMTimeoutError, LMConnectionError)


@dataclass(frozen=True)
class RetryPolicy:
    """How an LM call retries. Times are in seconds."""

    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    rate_limit_budget_s: float = 600.0
    retry_after_jitter: float = 0.25
    """At most this fraction of a ``Retry-After`` wait is added to it, uniformly at random."""

    def __post_init__(self) -> None:
        if self.retry_after_jitter < 0:
            raise ConfigurationError(f"retry_after_jitter must be >= 0, got {self.retry_after_jitter}")


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th retry (0-based)."""
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** min(attempt, 32))
    return (rng or random).uniform(0.0, ceiling)


def retry_after_delay(retry_after: float, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """The wait for a response that asked for ``retry_after`` seconds: never less, plus jitter.

    The jitter is uniform over a window of ``retry_after_jitter`` times the wait (times
    ``base_delay`` when the wait is shorter, so a ``Retry-After: 0`` herd spreads too; at most
    ``max_delay``): the calls refused in the same instant come back spread over it, not as a herd.
    """
    window = min(policy.max_delay, policy.retry_after_jitter * max(policy.base_delay, retry_after))
    return retry_after + (rng or random).uniform(0.0, window)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date; None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT; a zone-less one is read as such
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_from_headers(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """``retry-after-ms`` (OpenAI's, more precise) if present and valid, else ``Retry-After``."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"), now=now)


def provider_message(body: str, *, secret: str | None = None) -> str:
    """The provider's error message from a response body (OpenAI's ``{"error": {"message"}}`` shape
    or raw text), shortened, with ``secret`` blanked out in case the provider echoed it."""
    message = body.strip()
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        found = error.get("message") if isinstance(error, dict) else error
        if isinstance(found, str) and found:
            message = found
    if secret:
        message = message.replace(secret, "***")
    return message[:_MAX_MESSAGE_CHARS] or "(empty response body)"


def _error_class(status: int) -> type[LMError]:
    if status == 429:
        return LMRateLimitError
    if status >= 500:
        return LMServerError
    if status in (401, 403):
        return LMAuthenticationError
    if status == 404:
        return LMNotFoundError
    return LMRequestError


def error_for_status(
    status: int,
    body: str,
    headers: Mapping[str, str],
    *,
    model: str,
    api_base: str,
    secret: str | None = None,
) -> LMError:
    """The dspex error for an HTTP error response (status >= 400), with DSPy's metadata: the
    provider (the model's prefix), the provider's error code and its request id when it sent them.
    A 400 whose code says the prompt was too long is a :class:`ContextWindowExceededError`."""
    detail = provider_message(body, secret=secret)
    provider_code = _provider_code(body)
    error_class = _error_class(status)
    if status == 400 and provider_code in _CONTEXT_WINDOW_CODES:
        error_class = ContextWindowExceededError
    elif status == 402 or provider_code in _BILLING_CODES:  # waiting cannot refill a quota
        error_class = LMBillingError
    return error_class(
        f"{api_base} answered HTTP {status}: {detail}",
        status=status,
        retry_after=retry_after_from_headers(headers),
        model=model,
        provider=model.partition("/")[0] if "/" in model else None,
        provider_code=provider_code,
        request_id=headers.get("x-request-id") or headers.get("request-id"),
        api_base=api_base,
    )


# What OpenAI (and servers copying its errors) call an over-long prompt, and a used-up account
# (OpenAI answers that one with a 429, which must not be waited out like a rate limit).
_CONTEXT_WINDOW_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_BILLING_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


def _provider_code(body: str) -> str | None:
    """The ``code`` of an OpenAI-shaped error body (``{"error": {"code": ...}}``), if any."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code is not None else None


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
    breaker: CircuitBreaker | None = None,
) -> T:
    """Run ``attempt`` until it returns, retrying per ``policy``; raise the last error otherwise.

    ``breaker``: the endpoint's circuit breaker (``attempt`` waits on it); failures while it is
    not closed do not use up retries (see the module docs).
    """
    retries = 0
    rate_limited = 0
    waited_on_429 = 0.0
    while True:
        try:
            return await attempt()
        except LMRateLimitError as exc:
            delay = _rate_limit_delay(exc, rate_limited, policy, rng)
            if waited_on_429 + delay > policy.rate_limit_budget_s:
                raise _budget_spent(exc, waited_on_429, policy) from exc
            rate_limited += 1
            waited_on_429 += delay
        except _TRANSIENT as exc:
            if breaker is not None and breaker.state != "closed":
                retries = 0  # an outage: the next attempt waits for the breaker to close
                continue
            if retries >= policy.max_retries:
                raise
            delay = (
                retry_after_delay(exc.retry_after, policy, rng)
                if exc.retry_after is not None
                else backoff_delay(retries, policy, rng)
            )
            retries += 1
            logger.info("LM call failed (%s); retry %s/%s in %.2fs", exc, retries, policy.max_retries, delay)
        await sleep(delay)


def _rate_limit_delay(
    exc: LMRateLimitError, rate_limited: int, policy: RetryPolicy, rng: random.Random | None
) -> float:
    if exc.retry_after is not None:
        return retry_after_delay(exc.retry_after, policy, rng)
    return backoff_delay(rate_limited, policy, rng)


def _budget_spent(exc: LMRateLimitError, waited: float, policy: RetryPolicy) -> LMRateLimitError:
    message = (
        f"{exc.message} (still rate limited after waiting {waited:.1f}s in total; the budget is "
        f"{policy.rate_limit_budget_s:.0f}s: lower the concurrency or raise rate_limit_budget_s)"
    )
    return LMRateLimitError(
        message,
        status=exc.status,
        retry_after=exc.retry_after,
        model=exc.model,
        provider=exc.provider,
        provider_code=exc.provider_code,
        request_id=exc.request_id,
        api_base=exc.api_base,
    )
