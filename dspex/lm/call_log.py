"""Every LM call made inside a block, kept as it happened: the messages sent, the answer or the error.

A predictor opens one log per task (:func:`logging_lm_calls`), and every call that goes through
:func:`dspex.lm.base.call_lm` inside it (this task, and the tasks and threads it starts with a copied
context) adds an :class:`LMCall`. Nothing is copied or formatted while the program runs: an entry
holds references to the messages list and the response, and the predictor turns the log into
bounded result fields once the run ends (:mod:`dspex.processors.lm_calls`). Outside a log, a call
costs one context-variable read.

    with logging_lm_calls() as log:
        await program.acall(question="2 + 3?")
    [call.response.text for call in log.calls if call.response is not None]
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    from dspex.lm.client import LMResponse

__all__ = ["MAX_LOGGED_CALLS", "LMCall", "LMCallLog", "current_log", "logging_lm_calls"]

# A program looping over its LM must not grow a task's memory (and its result) without bound.
MAX_LOGGED_CALLS: Final = 100

Complete = Callable[[Any, Sequence[Mapping[str, Any]], Mapping[str, Any]], Awaitable["LMResponse"]]


class LMCall(NamedTuple):
    """One LM call: what was sent and what came back (``response``) or the failure (``error``).

    ``start_s`` is when it started in seconds since the log was opened, ``duration_s`` how long it
    took (limiter waits and retries included).
    """

    lm: Any
    messages: Sequence[Mapping[str, Any]]
    response: LMResponse | None
    error: Exception | None
    start_s: float
    duration_s: float


class LMCallLog:
    """The LM calls of one piece of work, at most ``max_calls`` (``dropped`` counts the rest)."""

    __slots__ = ("calls", "dropped", "max_calls", "started")

    def __init__(self, max_calls: int = MAX_LOGGED_CALLS) -> None:
        self.started = time.perf_counter()
        self.calls: list[LMCall] = []
        self.dropped = 0
        self.max_calls = max_calls

    async def complete(
        self, complete: Complete, lm: Any, messages: Sequence[Mapping[str, Any]], request: Mapping[str, Any]
    ) -> LMResponse:
        """``await complete(lm, messages, request)``, logged with its answer or its failure."""
        started = time.perf_counter()
        try:
            response = await complete(lm, messages, request)
        except Exception as exc:
            self._add(LMCall(lm, messages, None, exc, started - self.started, time.perf_counter() - started))
            raise
        self._add(LMCall(lm, messages, response, None, started - self.started, time.perf_counter() - started))
        return response

    def _add(self, call: LMCall) -> None:
        if len(self.calls) < self.max_calls:
            self.calls.append(call)
        else:
            self.dropped += 1


_LOG: contextvars.ContextVar[LMCallLog | None] = contextvars.ContextVar("dspex_lm_call_log", default=None)


class _Logging(AbstractContextManager[LMCallLog]):
    # A plain class rather than @contextmanager: a predictor opens one per task.
    __slots__ = ("_token", "log")

    def __init__(self, log: LMCallLog) -> None:
        self.log = log
        self._token: contextvars.Token[LMCallLog | None] | None = None

    def __enter__(self) -> LMCallLog:
        self._token = _LOG.set(self.log)
        return self.log

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _LOG.reset(self._token)
            self._token = None


def logging_lm_calls(max_calls: int = MAX_LOGGED_CALLS) -> AbstractContextManager[LMCallLog]:
    """Open a log of the LM calls made inside the block (replacing an enclosing one there)."""
    return _Logging(LMCallLog(max_calls))


def current_log() -> LMCallLog | None:
    """The log open in the current context, if any."""
    return _LOG.get()
