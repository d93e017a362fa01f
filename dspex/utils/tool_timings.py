"""When each tool call of a program run started and how long it took, for the run's result.

The agents (ReAct, ReActV2, CodeAct) time their tool calls with :func:`timed_tool_call`; whoever
runs a program for a result (local ``Evaluate``, the predict worker) opens a log around the run:

    with tool_timings() as log:
        prediction = await program.acall(**inputs)
    log.records()   # [ToolCallRecord(tool="search", start_s=0.41, duration_s=0.2, outcome="ok"), ...]

The log lives in a context variable, so calls in tasks the run gathers (a turn's concurrent tool
calls) land in the same log; with no log open, timing a call costs one context-variable read. The
timings stay out of the predictions themselves: a ReAct trajectory is what the LM sees, as DSPy's.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from dspex.schemas.common import ToolCallRecord

__all__ = ["ToolTimingLog", "count_from", "timed_tool_call", "tool_timings"]

# Bounds what one example's result carries: an agent looping for thousands of calls keeps its first.
MAX_RECORDED_CALLS: Final = 1000


class ToolTimingLog:
    """The tool calls of one program run, with offsets from ``origin``: the moment the log was
    opened, or the one given to :func:`count_from`."""

    __slots__ = ("_calls", "dropped", "origin")

    def __init__(self) -> None:
        self.origin = time.perf_counter()  # offsets are counted from here
        self._calls: list[ToolCallRecord] = []
        self.dropped = 0  # calls past MAX_RECORDED_CALLS, counted but not kept

    def add(self, tool: str, started: float, ended: float, outcome: str) -> None:
        """Record a call that ran from ``started`` to ``ended`` (``time.perf_counter()`` readings)."""
        if len(self._calls) >= MAX_RECORDED_CALLS:
            self.dropped += 1
            return
        start_s = max(started - self.origin, 0.0)
        self._calls.append(
            ToolCallRecord(tool=tool, start_s=start_s, duration_s=max(ended - started, 0.0), outcome=outcome)
        )

    def records(self) -> list[ToolCallRecord]:
        """The calls recorded so far, by start time."""
        return sorted(self._calls, key=lambda call: call.start_s)


_log: contextvars.ContextVar[ToolTimingLog | None] = contextvars.ContextVar(
    "dspex_tool_timings", default=None
)


@contextmanager
def tool_timings(log: ToolTimingLog | None = None) -> Iterator[ToolTimingLog]:
    """Record the tool calls made inside the block into ``log`` (default: a new one, its offsets
    counted from now); an enclosing log does not see them."""
    log = ToolTimingLog() if log is None else log
    token = _log.set(log)
    try:
        yield log
    finally:
        _log.reset(token)


class _TimedCall:
    """Times one call into the open log (if any); ``outcome`` is set by the caller before exit."""

    __slots__ = ("log", "outcome", "started", "tool")

    def __init__(self, tool: str, log: ToolTimingLog | None) -> None:
        self.tool, self.log, self.outcome = tool, log, "ok"
        self.started = time.perf_counter()

    def __enter__(self) -> _TimedCall:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, traceback: object) -> None:
        if self.log is None:
            return
        outcome = self.outcome
        if exc is not None:  # cancelled, or a caller's bug: not a result the LM saw
            outcome = "error" if isinstance(exc, Exception) else "cancelled"
        self.log.add(self.tool, self.started, time.perf_counter(), outcome)


def count_from(origin: float) -> None:
    """Count the open log's offsets from ``origin`` (a ``time.perf_counter()`` reading), e.g. the
    moment the program started, when the log was opened earlier; nothing without an open log."""
    log = _log.get()
    if log is not None:
        log.origin = origin


def timed_tool_call(tool: str) -> _TimedCall:
    """A context manager timing one call of ``tool``; set ``.outcome`` inside (default ``"ok"``)."""
    return _TimedCall(tool, _log.get())
