"""Token usage and cost, and the trackers that sum them.

Every LM call records one :class:`Usage` into every tracker active in the caller's context. Trackers
live on a ``contextvars`` stack, so that concurrent tasks (``asyncio.gather``) and threads started with a
copied context each add to the trackers that were open where they started, and never to a neighbour's:

    with track_usage() as run:
        await asyncio.gather(*(lm.acomplete(m) for m in batch))
    run.usage.total_tokens, run.usage.cost_usd
"""

from __future__ import annotations

import contextvars
import threading
from contextlib import AbstractContextManager

from pydantic import BaseModel, ConfigDict

__all__ = ["Usage", "UsageTracker", "active_trackers", "record_usage", "track_usage"]


class Usage(BaseModel):
    """Tokens, cost in USD and call counts of one LM call or a sum of many.

    A cache hit counts as a call (``lm_calls``) and a hit (``cache_hits``) with no tokens and no cost:
    nothing was sent to the provider.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    lm_calls: int = 0
    cache_hits: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        # Sums of validated values need no validation (this runs for every LM call and tracker).
        return Usage.model_construct(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            lm_calls=self.lm_calls + other.lm_calls,
            cache_hits=self.cache_hits + other.cache_hits,
        )


_NO_USAGE = Usage()  # frozen, so one instance serves every empty tracker


class UsageTracker:
    """A running sum of :class:`Usage`, safe to add to from several threads at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # None until the first call: most trackers (one per task and per module call) see exactly
        # one LM call, which then needs no addition and no new Usage.
        self._usage: Usage | None = None

    @property
    def usage(self) -> Usage:
        """The sum so far."""
        with self._lock:
            return self._usage if self._usage is not None else _NO_USAGE

    def add(self, usage: Usage) -> None:
        """Add one call's usage."""
        with self._lock:
            self._usage = usage if self._usage is None else self._usage + usage

    def __repr__(self) -> str:
        return f"UsageTracker({self.usage!r})"


# A tuple, never mutated in place: each context sees the stack as it was when it was copied.
_stack: contextvars.ContextVar[tuple[UsageTracker, ...]] = contextvars.ContextVar(
    "dspex_usage_trackers", default=()
)


class _Tracking(AbstractContextManager[UsageTracker]):
    # A plain class rather than @contextmanager: a worker opens one per task.
    __slots__ = ("_token", "tracker")

    def __init__(self, tracker: UsageTracker) -> None:
        self.tracker = tracker
        self._token: contextvars.Token[tuple[UsageTracker, ...]] | None = None

    def __enter__(self) -> UsageTracker:
        self._token = _stack.set((*_stack.get(), self.tracker))
        return self.tracker

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _stack.reset(self._token)
            self._token = None


def track_usage(tracker: UsageTracker | None = None) -> AbstractContextManager[UsageTracker]:
    """Open a tracker (a new one unless given) that receives every LM call made inside the block."""
    return _Tracking(tracker if tracker is not None else UsageTracker())


def active_trackers() -> tuple[UsageTracker, ...]:
    """The trackers open in the current context, outermost first."""
    return _stack.get()


def record_usage(usage: Usage) -> None:
    """Add ``usage`` to every tracker open in the current context."""
    for tracker in _stack.get():
        tracker.add(usage)
