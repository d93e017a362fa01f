"""A circuit breaker per LM endpoint: stop calling a provider that is down, probe it, resume.

States: ``closed`` (calls go through), ``open`` (nothing is sent: :meth:`~CircuitBreaker.acquire`
waits, as LM calls do; :meth:`~CircuitBreaker.try_acquire` refuses at once, as tool calls do),
``half_open`` (one probe call at a time goes through; the others wait or are refused).

* ``failure_threshold`` consecutive connection failures or 5xx answers (across every call of the
  endpoint; any success resets the count) open the breaker.
* After ``open_s`` the next call becomes the half-open probe. Any HTTP answer other than a 5xx
  (a success, a 429, a 4xx) proves the endpoint reachable and closes the breaker; a connection
  failure, a 5xx or a timeout opens it again, for twice as long (up to ``max_open_s``).
* Calls wait while the breaker is open instead of failing: the retry loop does not count the
  attempts that failed in an outage (:func:`dspex.lm.retry.with_retries`), so an outage delays
  tasks and does not turn them into failures. A worker also pauses its partitions while a breaker
  is open (``on_change``), so new tasks wait in Kafka.

    breaker = CircuitBreaker("http://127.0.0.1:8000/v1")
    probe = await breaker.acquire()      # waits while open
    try:
        response = await send()
    except LMConnectionError:
        breaker.record_failure(probe)
        raise
    breaker.record_success(probe)

Like :class:`~dspex.lm.limiter.AdaptiveLimiter` it is safe to share across threads and event loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from dspex.errors import ConfigurationError

__all__ = ["BREAKER_STATES", "BreakerState", "CircuitBreaker", "StateListener"]

logger = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
BREAKER_STATES: tuple[BreakerState, ...] = ("closed", "half_open", "open")  # best to worst
StateListener = Callable[["CircuitBreaker", BreakerState], None]


class CircuitBreaker:
    """Closed / open / half-open gate of one endpoint (see the module docs)."""

    def __init__(
        self,
        endpoint: str,
        *,
        failure_threshold: int = 5,
        open_s: float = 1.0,
        max_open_s: float = 10.0,
        on_change: StateListener | None = None,
    ) -> None:
        if failure_threshold < 1 or open_s <= 0 or max_open_s < open_s:
            raise ConfigurationError(
                "circuit breaker needs failure_threshold >= 1 and 0 < open_s <= max_open_s, got "
                f"{failure_threshold}, {open_s}, {max_open_s}"
            )
        self.endpoint = endpoint
        self.failure_threshold = failure_threshold
        self.open_s, self.max_open_s = open_s, max_open_s
        self._listeners: list[StateListener] = [on_change] if on_change is not None else []
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._failures = 0
        self._open_for = open_s
        self._reopen_at = 0.0
        self._probing = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.opened = 0  # how many times it opened: for tests and logs

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open`` (an open breaker past its wait reads half_open)."""
        with self._lock:
            if self._state == "open" and time.monotonic() >= self._reopen_at:
                return "half_open"
            return self._state

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(breaker, new_state)`` on every change (from the thread that caused it)."""
        self._listeners.append(listener)

    async def acquire(self) -> bool:
        """Wait until a call may be sent; True when this call is the half-open probe.

        A probe must end in :meth:`record_success`, :meth:`record_failure` or :meth:`abandon`.
        """
        while True:
            with self._lock:
                granted, wait_s = self._try_locked()
                if granted is not None:
                    return granted
                future = self._park_locked()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), wait_s)

    def try_acquire(self) -> bool | None:
        """:meth:`acquire` without waiting: None when no call may go now (open, or a probe is out).

        For callers that answer at once instead of waiting (ReActV2's tools tell the LM the tool is
        unavailable). Call it from a coroutine: a move to half-open notifies on the running loop.
        """
        with self._lock:
            return self._try_locked()[0]

    def record_success(self, probe: bool = False) -> None:
        """The endpoint answered (any HTTP answer but a 5xx): reset the count; a probe closes it."""
        with self._lock:
            self._failures = 0
            if probe:
                self._probing = False
            if self._state == "closed" or not probe:
                return
            self._state, self._open_for = "closed", self.open_s
            self._wake_locked()
        logger.warning("circuit breaker of %s closed: the endpoint answers again", self.endpoint)
        self._notify("closed")

    def record_failure(self, probe: bool = False) -> None:
        """A connection failure, a 5xx, or a probe's timeout: count it; open at the threshold."""
        with self._lock:
            self._failures += 1
            if probe:
                self._probing = False
                self._open_for = min(self.max_open_s, self._open_for * 2)
            elif self._state != "closed" or self._failures < self.failure_threshold:
                return
            self._state = "open"
            self._reopen_at = time.monotonic() + self._open_for
            self.opened += 1
            self._wake_locked()  # waiters re-arm their timers for the new reopen time
            failures, wait = self._failures, self._open_for
        why = "the probe call failed" if probe else f"{failures} consecutive failures"
        logger.warning(
            # neutral on purpose: LM calls wait while it is open, tool calls are refused at once
            "circuit breaker of %s open (%s); no call goes through until a probe in %.1f s",
            self.endpoint,
            why,
            wait,
        )
        self._notify("open")

    def abandon(self, probe: bool) -> None:
        """A call ended without a verdict (cancelled, or an error that says nothing of the endpoint)."""
        if not probe:
            return
        with self._lock:
            self._probing = False
            self._wake_locked()

    # ---------------------------------------------------------------- internals (lock held)

    def _try_locked(self) -> tuple[bool | None, float | None]:
        """(True/False: go, as a probe or not) or (None, seconds to wait at most)."""
        if self._state == "closed":
            return False, None
        now = time.monotonic()
        if self._state == "open":
            if now < self._reopen_at:
                return None, self._reopen_at - now
            self._state = "half_open"
            self._notify_later("half_open")
        if not self._probing:
            self._probing = True
            return True, None
        return None, None  # half open and probing: wait for the probe's verdict

    def _park_locked(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((loop, future))
        return future

    def _wake_locked(self) -> None:
        waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    def _notify_later(self, state: BreakerState) -> None:
        # Called with the lock held: listeners run after it is released, on this loop.
        asyncio.get_running_loop().call_soon(self._notify, state)

    def _notify(self, state: BreakerState) -> None:
        for listener in self._listeners:
            try:
                listener(self, state)
            except Exception:  # a listener's bug must not break LM calls
                logger.exception("circuit breaker listener failed on %s -> %s", self.endpoint, state)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.endpoint!r}, state={self.state!r}, failures={self._failures})"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
