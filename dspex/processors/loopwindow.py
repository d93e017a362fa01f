"""How many tasks a worker's own event loop can carry: a window steered by the loop's lag.

The problem it solves: a predictor's handlers share one event loop. Every task spends some CPU
(building the prompt, parsing the answer, producing its result), so past some number in flight the
loop is busy all the time and each further task only adds latency: with N tasks in flight and a
throughput of X per second, each takes N / X seconds (Little's law). The LM limiter cannot see
this (it grows on every success until a 429), and at the defaults it let 1,024 tasks into a loop
that served about 450 at once: iterations of 1-2 s, and every task, a small job's just as much as
a big one's, took 5 s instead of 1. No queueing order fixes that; fewer tasks in flight does, and
costs no throughput, since the loop was already the bottleneck.

DESIGN. A sampler sleeps ``interval_s`` again and again; how late it wakes is the loop's lag, the
time any ready callback waits for its turn. :meth:`LoopLagWindow.observe` then steers the window,
as AIMD steers a congestion window, with the lag as the congestion signal:

* lag above ``target_s`` while at least half the window is in use: cut the window to ``decrease``
  times the tasks running, at most once per ``cooldown_s`` and only once the previous cut has
  taken effect (running at or below the window), so one slow stretch cuts once, not per sample;
* lag below half the target while the window is nearly full: grow it by ``growth`` (a share of the
  window per sample, so it regains a cut within a second or so);
* otherwise hold. A lag spike with few tasks running (a program being built, another process on
  the CPU) is not the tasks' doing and cuts nothing; the window never goes below ``minimum``.

It starts at ``maximum`` (the worker's ``--concurrency``): the LM limiter already ramps, and the
loop's window only has to come down where the CPU, not the LM, is what runs out.

    >>> window = LoopLagWindow(maximum=1024, minimum=32, clock=lambda: 0.0)
    >>> window.observe(lag_s=0.5, running=1000, now=1.0)
    >>> window.value
    800
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from dspex.errors import ConfigurationError

__all__ = ["LoopLagWindow"]

logger = logging.getLogger(__name__)

DEFAULT_TARGET_S = 0.05
DEFAULT_INTERVAL_S = 0.025


class LoopLagWindow:
    """A task window steered by the event loop's lag (see the module docs)."""

    def __init__(
        self,
        *,
        maximum: int,
        minimum: int = 32,
        target_s: float = DEFAULT_TARGET_S,
        interval_s: float = DEFAULT_INTERVAL_S,
        decrease: float = 0.8,
        growth: float = 0.01,
        cooldown_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ConfigurationError(
                f"the loop window needs 1 <= minimum <= maximum, got {minimum}, {maximum}"
            )
        if target_s <= 0 or interval_s <= 0 or not 0 < decrease < 1 or growth <= 0 or cooldown_s < 0:
            raise ConfigurationError(
                "the loop window needs target_s > 0, interval_s > 0, 0 < decrease < 1, growth > 0 "
                "and cooldown_s >= 0"
            )
        self.maximum, self.minimum = maximum, minimum
        self.target_s, self.interval_s = target_s, interval_s
        self.decrease, self.growth, self.cooldown_s = decrease, growth, cooldown_s
        self._clock = clock
        self._window = float(maximum)
        self._hold_until = 0.0
        self._cut_pending = False  # a cut not yet reached: running is still above the window
        self.cuts = 0
        self.last_lag_s = 0.0

    @property
    def value(self) -> int:
        """How many tasks may run now."""
        return int(self._window)

    def observe(self, *, lag_s: float, running: int, now: float) -> None:
        """One sample: the loop woke ``lag_s`` late with ``running`` tasks in flight."""
        self.last_lag_s = lag_s
        if running <= self._window:
            self._cut_pending = False
        if lag_s > self.target_s:
            if 2 * running >= self._window and now >= self._hold_until and not self._cut_pending:
                self._window = max(float(self.minimum), min(self._window, running) * self.decrease)
                self._hold_until = now + self.cooldown_s
                self._cut_pending = running > self._window
                self.cuts += 1
        elif 2 * lag_s < self.target_s and running >= 0.9 * self._window:
            self._window = min(float(self.maximum), self._window * (1.0 + self.growth) + 1.0)

    async def run(self, running: Callable[[], int]) -> None:
        """Sample the running loop's lag until cancelled; ``running()``: the tasks in flight now."""
        while True:
            before = self._clock()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, self._clock() - before - self.interval_s)
            self.observe(lag_s=lag, running=running(), now=self._clock())

    def __repr__(self) -> str:
        return f"LoopLagWindow(value={self.value}, last_lag_s={self.last_lag_s:.3f}, cuts={self.cuts})"
