"""Token usage and cost, and the trackers that sum them.

Every LM call records one :class:`Usage` into every tracker active in the caller's context. Trackers
live on a ``contextvars`` stack, so that concurrent tasks (``asyncio.gather``) and threads started with a
copied context each add to the trackers that were open where they started, and never to a neighbour's:

    with track_usage() as run:
        await asyncio.gather(*(lm.acomplete(m) for m in batch))
    run.usage.total_tokens, run.usage.cost_usd

A tracker opened with :func:`track_usage` (not :func:`track_totals`, dspex's own accounting) is also
DSPy's ``UsageTracker``: it keeps the provider's usage report of each call that reached the provider,
by model (``usage_data``, ``add_usage``, ``get_total_tokens``), and is what
``dspex.settings.usage_tracker`` names inside the block. Cache hits add nothing there (nothing was
billed), as in DSPy.
"""

from __future__ import annotations

import contextvars
import threading
from collections import defaultdict
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Usage",
    "UsageTracker",
    "active_trackers",
    "as_mapping",
    "current_usage_tracker",
    "merge_usage_reports",
    "record_usage",
    "track_totals",
    "track_usage",
    "usage_report",
]


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
        # Validated in pydantic-core, which costs less than model_construct's Python loop over the
        # fields (this runs for every LM call and tracker).
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            lm_calls=self.lm_calls + other.lm_calls,
            cache_hits=self.cache_hits + other.cache_hits,
        )


_NO_USAGE = Usage()  # frozen, so one instance serves every empty tracker


class UsageTracker:
    """A running sum of :class:`Usage`, safe to add to from several threads at once; with
    ``by_model`` (the default) also DSPy's per-model usage reports.

    >>> with dspex.track_usage() as tracker:
    ...     program(question="...")
    >>> tracker.usage.total_tokens, tracker.get_total_tokens()["openai/gpt-4o-mini"]["prompt_tokens"]
    """

    def __init__(self, *, by_model: bool = False) -> None:
        """``by_model=True``: also keep DSPy's per-model reports and be DSPy's
        ``settings.usage_tracker`` while open (what :func:`track_usage` and
        ``context(usage_tracker=...)`` open); otherwise the sums only (dspex's own trackers)."""
        self._lock = threading.Lock()
        # None until the first call: most trackers (one per task and per module call) see exactly
        # one LM call, which then needs no addition and no new Usage.
        self._usage: Usage | None = None
        self.by_model = by_model
        # DSPy's layout: model -> the usage report of each call, as the provider sent it.
        self.usage_data: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)

    @property
    def usage(self) -> Usage:
        """The sum so far."""
        with self._lock:
            return self._usage if self._usage is not None else _NO_USAGE

    def add(self, usage: Usage) -> None:
        """Add one call's usage."""
        with self._lock:
            self._usage = usage if self._usage is None else self._usage + usage

    def add_usage(self, lm: str, usage_entry: Mapping[str, Any]) -> None:
        """Keep one call's usage report for model ``lm`` (an empty report is not kept)."""
        if usage_entry:
            self.keep_report(lm, _plain(usage_entry))

    def keep_report(self, lm: str, entry: dict[str, Any]) -> None:
        """Keep ``entry`` as it is (:meth:`add_usage` without the copy)."""
        with self._lock:
            self.usage_data[lm].append(entry)

    def get_total_tokens(self) -> dict[str, dict[str, Any]]:
        """Each model's reports summed, key by key (nested details too): ``{model: {...}}``."""
        with self._lock:
            data = {lm: list(entries) for lm, entries in self.usage_data.items()}
        return {lm: merge_usage_reports(entries) for lm, entries in data.items()}

    def __deepcopy__(self, memo: dict[int, Any]) -> UsageTracker:
        # the lock cannot be copied; the reports are plain data
        import copy

        clone = UsageTracker(by_model=self.by_model)
        with self._lock:
            clone._usage = self._usage
            for lm, entries in self.usage_data.items():
                clone.usage_data[lm] = copy.deepcopy(entries, memo)
        return clone

    def __repr__(self) -> str:
        return f"UsageTracker({self.usage!r})"


def _plain(report: Mapping[str, Any]) -> dict[str, Any]:
    """A report with pydantic values (an SDK's token details) as dicts."""
    return {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in report.items()}


def _summable(value: object) -> bool:
    # a bool is an int, but a provider's flag (OpenRouter's is_byok) is not a count
    return isinstance(value, int | float) and not isinstance(value, bool)


def _merge_two(first: Mapping[str, Any] | None, second: Mapping[str, Any] | None) -> dict[str, Any]:
    if not first:
        return dict(second or {})
    if not second:
        return dict(first)
    merged = dict(first)
    for key, value in second.items():
        current = merged.get(key)
        if isinstance(value, Mapping) or isinstance(current, Mapping):
            merged[key] = _merge_two(
                current if isinstance(current, Mapping) else None,
                value if isinstance(value, Mapping) else None,
            )
        elif current is None:
            if value is not None:
                merged[key] = value
        elif _summable(current) and _summable(value):
            merged[key] = current + value
        # anything else (a string, a flag) keeps the first value seen
    return merged


def merge_usage_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Usage reports summed key by key: counts added, nested details merged the same way, a None
    replaced by the first value, anything else (flags, names) kept from the first report."""
    total: dict[str, Any] = {}
    for report in reports:
        total = _merge_two(total, report)
    return total


def as_mapping(reported: object) -> Mapping[str, Any] | None:
    """A provider SDK's usage object (a dict, a pydantic model, a plain object) as a mapping; None
    when there is none or it is empty (DSPy keeps no report then)."""
    if isinstance(reported, Mapping):
        found: Mapping[str, Any] = reported
    elif isinstance(reported, BaseModel):
        found = reported.model_dump()
    elif reported is not None and hasattr(reported, "__dict__"):
        found = {k: v for k, v in vars(reported).items() if not k.startswith("_")}
    else:
        return None
    return found or None


def usage_report(reported: Mapping[str, Any] | None) -> dict[str, Any]:
    """The usage report DSPy keeps for a call, from the ``usage`` object of an OpenAI-compatible
    answer: the token counts (``total_tokens`` added when the provider left it out), the two
    details objects (None when absent) and whatever else the provider sent."""
    reported = reported or {}
    prompt = reported.get("prompt_tokens") or 0
    completion = reported.get("completion_tokens") or 0
    report: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": reported.get("total_tokens") or prompt + completion,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    report.update(_plain(reported))
    return report


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
    """Open a tracker (a new one unless given) that receives every LM call made inside the block.

    DSPy's ``dspy.track_usage()``: the tracker it gives has DSPy's ``usage_data`` and
    ``get_total_tokens()`` too. Trackers nest: a call inside two blocks counts in both.
    """
    return _Tracking(tracker if tracker is not None else UsageTracker(by_model=True))


def track_totals(tracker: UsageTracker | None = None) -> AbstractContextManager[UsageTracker]:
    """Open a tracker of sums only (a new one unless given): dspex's own accounting of a run, a
    task or a step, which DSPy code does not see as ``settings.usage_tracker``."""
    return _Tracking(tracker if tracker is not None else UsageTracker())


def active_trackers() -> tuple[UsageTracker, ...]:
    """The trackers open in the current context, outermost first."""
    return _stack.get()


def current_usage_tracker() -> UsageTracker | None:
    """The innermost open tracker that keeps per-model reports (DSPy's ``settings.usage_tracker``)."""
    for tracker in reversed(_stack.get()):
        if tracker.by_model:
            return tracker
    return None


def record_usage(usage: Usage, model: str | None = None, reported: Mapping[str, Any] | None = None) -> None:
    """Add ``usage`` to every tracker open in the current context, and for a call to ``model`` that
    reached the provider, the provider's ``usage`` object (``reported``, ``{}`` when it sent none) as
    DSPy's usage report (:func:`usage_report`) to the trackers that keep reports by model."""
    trackers = _stack.get()
    for tracker in trackers:
        tracker.add(usage)
    if model is None or reported is None or usage.cache_hits:
        return
    entry: dict[str, Any] | None = None  # built once, only if a tracker keeps it; shared, never changed
    for tracker in trackers:
        if tracker.by_model:
            if entry is None:
                entry = usage_report(reported)
            tracker.keep_report(model, entry)
