"""The flow control a worker keeps per LM endpoint: an adaptive limiter and a circuit breaker.

Every LM a worker builds for the same API base shares one :class:`~dspex.lm.limiter.AdaptiveLimiter`
(starts at ``initial_limit``, doubles per round trip until the first 429 or timeout, then grows
additively; halves on 429s and timeouts, never above the worker's concurrency, optionally capped in
requests/s and tokens/min) and one
:class:`~dspex.lm.breaker.CircuitBreaker` (opens after consecutive connection failures or 5xx
answers; the worker pauses its partitions while no breaker is closed: one dead endpoint's calls wait
on its breaker, the other endpoints' work goes on).

A task waiting for the limiter or the breaker is a running handler of the consumer runtime, so it
counts toward the worker's in-flight bound: a saturated limiter fills the bound and the runtime
pauses its partitions, and new tasks wait in Kafka.

    endpoints = Endpoints(EndpointOptions(max_rps=50), max_limit=256)
    lm = LM(..., limiter=endpoints.limiter(base), breaker=endpoints.breaker(base))
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from dspex.errors import ConfigurationError
from dspex.lm.breaker import BREAKER_STATES, BreakerState, CircuitBreaker
from dspex.lm.limiter import AdaptiveLimiter
from dspex.observability import metrics
from dspex.schemas.workers import EndpointHealth

__all__ = ["EndpointOptions", "Endpoints"]

BreakerListener = Callable[[str, BreakerState], None]


@dataclass(frozen=True)
class EndpointOptions:
    """Flow control per LM endpoint (the worker CLI's ``--lm-*``, ``--max-*`` and ``--breaker-*``).

    ``adaptive`` False fixes the limit at the worker's concurrency (the caps still apply).
    """

    adaptive: bool = True
    # The default --concurrency (1,024), so a cold predictor's first round trip is a full one (the
    # limiter never exceeds --concurrency). From 512 the ramp cost about one round trip of a job:
    # at 1 s LM latency the defaults measured 73-91% of --lm-initial-limit 1024 (bench/RESULTS.md,
    # session 14). A provider that takes less answers the first window with 429s, which are flow
    # control: the limit halves once per cooldown, nothing fails
    # (tests/e2e/resilience/test_resilience_rate_limit.py holds its 200 requests/s with 0 failed
    # examples). The burst of two cold predictors (2,048 connections at once) once starved the
    # simulated LM's control endpoint in a test; it now has a listener of its own (dspex.testing._admin).
    initial_limit: int = 1024
    max_rps: float | None = None
    max_tpm: float | None = None
    breaker_failures: int = 5
    breaker_open_s: float = 1.0
    breaker_max_open_s: float = 5.0

    def __post_init__(self) -> None:
        if self.initial_limit < 1:
            raise ConfigurationError(f"--lm-initial-limit must be >= 1, got {self.initial_limit}")
        for name, cap in (("--max-rps", self.max_rps), ("--max-tpm", self.max_tpm)):
            if cap is not None and cap <= 0:
                raise ConfigurationError(f"{name} must be > 0, got {cap}")
        if self.breaker_failures < 1 or self.breaker_open_s <= 0:
            raise ConfigurationError("--breaker-failures must be >= 1 and --breaker-open-s > 0")


class Endpoints:
    """One limiter and one breaker per API base, created on first use (see the module docs)."""

    def __init__(self, options: EndpointOptions | None = None, *, max_limit: int = 1024) -> None:
        self.options = options or EndpointOptions()
        self.max_limit = max(1, max_limit)
        self._limiters: dict[str, AdaptiveLimiter] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._listeners: list[BreakerListener] = []
        self._lock = threading.Lock()

    def add_listener(self, listener: BreakerListener) -> None:
        """Call ``listener(api_base, state)`` whenever a breaker changes state."""
        self._listeners.append(listener)

    def limiter(self, api_base: str) -> AdaptiveLimiter:
        """The limiter of ``api_base``."""
        with self._lock:
            found = self._limiters.get(api_base)
            if found is None:
                found = self._limiters[api_base] = self._new_limiter()
                metrics.set_limiter_limit(api_base, found.limit)
            return found

    def breaker(self, api_base: str) -> CircuitBreaker:
        """The circuit breaker of ``api_base``."""
        with self._lock:
            found = self._breakers.get(api_base)
            if found is None:
                options = self.options
                found = self._breakers[api_base] = CircuitBreaker(
                    api_base,
                    failure_threshold=options.breaker_failures,
                    open_s=options.breaker_open_s,
                    max_open_s=max(options.breaker_open_s, options.breaker_max_open_s),
                    on_change=self._changed,
                )
                metrics.set_breaker_state(api_base, "closed")
            return found

    def health(self) -> list[EndpointHealth]:
        """Limit, calls holding a slot and breaker state of every endpoint used so far."""
        with self._lock:
            bases = sorted(set(self._limiters) | set(self._breakers))
            return [self._health(base) for base in bases]

    def limit(self) -> float | None:
        """The smallest limit over the endpoints (None before the first LM was built)."""
        limits = [limiter.limit for limiter in list(self._limiters.values())]
        return float(min(limits)) if limits else None

    def worst_state(self) -> BreakerState:
        """``open`` if any breaker is open, else ``half_open`` if any is, else ``closed``."""
        states = [breaker.state for breaker in list(self._breakers.values())]
        return max(states, key=BREAKER_STATES.index, default="closed")

    def hold_state(self) -> BreakerState:
        """The state the worker's partitions follow: the best over the endpoints used so far.

        Partitions are paused only when no endpoint is closed: one dead endpoint must not stop the
        work of the others (its own calls wait on its breaker inside the call instead).
        """
        states = [breaker.state for breaker in list(self._breakers.values())]
        return min(states, key=BREAKER_STATES.index, default="closed")

    def _health(self, base: str) -> EndpointHealth:
        limiter, breaker = self._limiters.get(base), self._breakers.get(base)
        return EndpointHealth(
            api_base=base,
            limit=float(limiter.limit) if limiter is not None else float(self.max_limit),
            in_flight=limiter.in_flight if limiter is not None else 0,
            breaker_state=breaker.state if breaker is not None else "closed",
        )

    def _new_limiter(self) -> AdaptiveLimiter:
        options = self.options
        if options.adaptive:
            initial = min(options.initial_limit, self.max_limit)
            low, high = 1, self.max_limit
        else:
            initial = low = high = self.max_limit
        return AdaptiveLimiter(
            initial=initial,
            minimum=low,
            maximum=high,
            max_rps=options.max_rps,
            max_tpm=options.max_tpm,
        )

    def _changed(self, breaker: CircuitBreaker, state: BreakerState) -> None:
        metrics.set_breaker_state(breaker.endpoint, state)
        for listener in self._listeners:
            listener(breaker.endpoint, state)
