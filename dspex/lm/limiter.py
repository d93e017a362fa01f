"""Adaptive concurrency per LM endpoint: find a provider's real limit instead of guessing one.

Two phases, as TCP finds a path's capacity:

* slow start (``slow_start=True``, the default): every success adds one slot, so a full window of
  successes doubles the limit each round trip (16 -> 1,024 in six), until the first 429 or timeout
  (or ``maximum``). It grows only while at least half of the limit is in use, so that a lightly
  loaded limiter does not drift to its maximum and then hit a provider with a burst it never tried;
* AIMD after that first overload: each success adds ``increase / limit`` (about ``increase`` per
  round trip of a full window).

A 429 or a timeout cuts the limit multiplicatively (``* decrease``) and ends slow start for good.
After a cut the limit holds still for a cooldown (at least ``cooldown_s``, longer if the 429
carried a ``Retry-After``), so that a burst of 429s from one window of calls cuts once, not once
per call. The retry loop still makes the call that got the 429 wait its ``Retry-After``; the
limiter only decides how many calls run at once.

    limiter = AdaptiveLimiter(initial=16, maximum=512)
    async with limiter.slot():
        ...  # one call; an LMRateLimitError or LMTimeoutError escaping it cuts the limit

Optional fixed caps per limiter (so per worker and endpoint): ``max_rps`` requests per second and
``max_tpm`` tokens per minute (token buckets holding one second of requests and ten seconds of
tokens; tokens are charged after each call from the usage it reports, so one call may overdraw
the bucket and the next ones wait for it to refill).

The limiter is safe to share across threads and event loops (waiters are woken on their own loop).
``LM(..., limiter=True)`` uses one per API base for the process.

Calls waiting for a slot are served per flow in turn, not first come first served: a worker runs
each job's calls inside ``limiter_flow(job_id)``, and a freed slot goes to the next flow with a
waiting call (round robin), so a small job's calls do not wait behind every call a big job queued
before them. Within a flow, and for calls outside any flow (one flow of their own), arrival order.

    with limiter_flow("job-1"):
        await lm.acall(...)  # waits its turn among the flows, not behind every earlier call
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token

from dspex.errors import ConfigurationError, LMRateLimitError, LMTimeoutError

__all__ = ["AdaptiveLimiter", "limiter_flow", "limiter_for"]

_FLOW: ContextVar[str] = ContextVar("dspex_limiter_flow", default="")


def limiter_flow(key: str) -> AbstractContextManager[None]:
    """Wait for limiter slots as flow ``key`` in this context (flows take turns; see the module docs)."""
    return _Flow(key)


class _Flow(AbstractContextManager[None]):
    # A plain class rather than @contextmanager: a predictor opens one per task.
    __slots__ = ("_key", "_token")

    def __init__(self, key: str) -> None:
        self._key = key
        self._token: Token[str] | None = None

    def __enter__(self) -> None:
        self._token = _FLOW.set(self._key)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _FLOW.reset(self._token)
            self._token = None


class AdaptiveLimiter:
    """An adaptive concurrency limit (slow start, then AIMD) with ``acquire`` / ``release`` and an
    async ``slot()`` context. ``clock`` (seconds, monotonic) is for tests."""

    def __init__(
        self,
        *,
        initial: float = 16,
        minimum: float = 1,
        maximum: float = 1024,
        increase: float = 1.0,
        decrease: float = 0.5,
        cooldown_s: float = 1.0,
        max_rps: float | None = None,
        max_tpm: float | None = None,
        slow_start: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ConfigurationError(
                f"limiter needs 1 <= minimum <= initial <= maximum, got {minimum}, {initial}, {maximum}"
            )
        if not 0 < decrease < 1 or increase <= 0 or cooldown_s < 0:
            raise ConfigurationError("limiter needs 0 < decrease < 1, increase > 0 and cooldown_s >= 0")
        self.minimum, self.maximum = float(minimum), float(maximum)
        self.increase, self.decrease, self.cooldown_s = increase, decrease, cooldown_s
        self._limit = float(initial)
        self._slow_start = slow_start
        self._clock = clock
        self._in_flight = 0
        self._hold_until = 0.0
        self._lock = threading.Lock()
        # Waiting calls per flow; `_turns` holds the flows with waiters, the next one to serve first.
        self._waiters: dict[str, collections.deque[_Waiter]] = {}
        self._turns: collections.deque[str] = collections.deque()
        self._queued = 0
        self._requests = _Bucket(max_rps, max_rps, clock) if max_rps else None
        self._tokens = _Bucket(max_tpm / 60.0, max_tpm / 6.0, clock) if max_tpm else None

    @property
    def limit(self) -> int:
        """How many calls may run at once now."""
        return int(self._limit)

    @property
    def in_slow_start(self) -> bool:
        """True until the first 429 or timeout: the limit still doubles per round trip."""
        return self._slow_start

    @property
    def in_flight(self) -> int:
        """How many calls hold a slot now."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """How many calls wait for a slot now (cancelled ones included until their turn comes)."""
        return self._queued

    async def acquire(self) -> None:
        """Wait for a free slot."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._in_flight < int(self._limit) and not self._queued:
                self._in_flight += 1
                return
            waiter = _Waiter(loop)
            self._enqueue_locked(_FLOW.get(), waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise

    async def pace(self) -> None:
        """Wait until the fixed caps (``max_rps``, ``max_tpm``) let one more request go."""
        if self._requests is None and self._tokens is None:
            return
        while True:
            with self._lock:
                wait = max(_wait(self._tokens, 0.0), _wait(self._requests, 1.0))
                if wait <= 0 and self._requests is not None:
                    self._requests.take(1.0)
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def record_tokens(self, tokens: int) -> None:
        """Charge ``tokens`` (prompt + completion of a finished call) to the tokens-per-minute cap."""
        if self._tokens is not None and tokens > 0:
            with self._lock:
                self._tokens.take(float(tokens))

    def release(self) -> None:
        """Give a slot back, without a verdict on the call."""
        with self._lock:
            self._in_flight -= 1
            self._wake_locked()

    def record_success(self) -> None:
        """A call succeeded: grow the limit (unless cooling down)."""
        with self._lock:
            if self._clock() >= self._hold_until:
                self._limit = min(self.maximum, self._limit + self._growth_locked())
            self._wake_locked()

    def record_overload(self, retry_after: float | None = None) -> None:
        """A 429 or a timeout: end slow start, cut the limit once per cooldown, hold it for the cooldown."""
        now = self._clock()
        with self._lock:
            self._slow_start = False
            if now >= self._hold_until:
                self._limit = max(self.minimum, self._limit * self.decrease)
            self._hold_until = max(self._hold_until, now + max(self.cooldown_s, retry_after or 0.0))

    def _growth_locked(self) -> float:
        if not self._slow_start:
            return self.increase / self._limit
        # One slot per success doubles a full window per round trip. A window less than half used
        # says nothing about the endpoint's capacity: no growth (TCP's congestion-window validation).
        return 1.0 if 2 * self._in_flight >= self._limit else 0.0

    def slot(self) -> _Slot:
        """Hold a slot for one call; its outcome (success, overload, other error) adjusts the limit."""
        return _Slot(self)

    def _enqueue_locked(self, flow: str, waiter: _Waiter) -> None:
        queue = self._waiters.get(flow)
        if queue is None:
            queue = self._waiters[flow] = collections.deque()
            self._turns.append(flow)  # a flow that starts waiting joins at the end of the round
        queue.append(waiter)
        self._queued += 1

    def _next_waiter_locked(self) -> _Waiter:
        flow = self._turns[0]
        queue = self._waiters[flow]
        waiter = queue.popleft()
        self._queued -= 1
        if queue:
            self._turns.rotate(-1)
        else:
            del self._waiters[flow]
            self._turns.popleft()
        return waiter

    def _wake_locked(self) -> None:
        while self._queued and self._in_flight < int(self._limit):
            waiter = self._next_waiter_locked()
            if waiter.future.done():  # cancelled while queued
                continue
            self._in_flight += 1
            waiter.granted = True
            waiter.loop.call_soon_threadsafe(_resolve, waiter.future)

    def _abandon(self, waiter: _Waiter) -> None:
        with self._lock:
            if waiter.granted:
                # The slot was handed over just as the waiter was cancelled: hand it on.
                self._in_flight -= 1
                self._wake_locked()

    def __repr__(self) -> str:
        phase = "slow start" if self._slow_start else "aimd"
        return f"AdaptiveLimiter(limit={self.limit}, in_flight={self._in_flight}, {phase})"


class _Slot:
    """``async with limiter.slot():`` one call's slot. A class rather than @asynccontextmanager: a
    worker opens one per LM call, and the decorator adds an async generator to each."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: AdaptiveLimiter) -> None:
        self._limiter = limiter

    async def __aenter__(self) -> None:
        await self._limiter.acquire()
        try:
            await self._limiter.pace()
        except BaseException:
            self._limiter.release()
            raise

    async def __aexit__(self, exc_type: object, exc: BaseException | None, traceback: object) -> None:
        limiter = self._limiter
        try:
            if exc is None:
                limiter.record_success()
            elif isinstance(exc, LMRateLimitError):
                limiter.record_overload(exc.retry_after)
            elif isinstance(exc, LMTimeoutError):
                limiter.record_overload()
        finally:
            limiter.release()


class _Bucket:
    """A token bucket: ``rate`` per second, holding up to ``capacity``; may go into debt."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ConfigurationError(f"a rate cap must be > 0, got {rate}")
        self.rate, self.capacity = rate, max(1.0, capacity)
        self.level = self.capacity
        self._clock = clock
        self._at = clock()

    def refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now

    def take(self, amount: float) -> None:
        self.refill()
        self.level -= amount

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (0 when it may now)."""
        self.refill()
        return max(0.0, (amount - self.level) / self.rate) if self.level < amount else 0.0


def _wait(bucket: _Bucket | None, amount: float) -> float:
    # The tokens cap admits a call while the bucket is not in debt (amount 0: level >= 0).
    return 0.0 if bucket is None else bucket.wait_for(amount)


class _Waiter:
    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_by_endpoint: dict[str, AdaptiveLimiter] = {}
_by_endpoint_lock = threading.Lock()


def limiter_for(api_base: str, choice: AdaptiveLimiter | bool) -> AdaptiveLimiter | None:
    """The limiter an LM uses: its own instance, the process-wide one of its API base, or none."""
    if isinstance(choice, AdaptiveLimiter):
        return choice
    if not choice:
        return None
    with _by_endpoint_lock:
        limiter = _by_endpoint.get(api_base)
        if limiter is None:
            limiter = _by_endpoint[api_base] = AdaptiveLimiter()
        return limiter
