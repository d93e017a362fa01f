"""The examples of a local evaluation, each sampled or not before its program is called.

An example of an evaluation is a trace of its own, linked to the evaluation's span. Evaluate asks
tracing (:meth:`~dspex.observability.tracing.callback.TracingCallback.examples_of`) for its
examples' sampling before each program call, so that an unsampled example (99 in 100 at the
default ratio) is not announced to tracing at all: tracing's callback is muted for the examples a
worker runs (:func:`dspex.utils.callback.muted`), and the program runs as it runs with tracing off.
What tracing keeps of it is what Evaluate holds anyway (its inputs, when it started) and the place
its LM calls take in the worker's LM call log. If it fails, its span is made then, after the fact,
as the callback would have made it: its inputs, the error, start and end, and its LM calls as
``LLM`` child spans (:mod:`~dspex.observability.tracing.recalled`). A sampled example is heard as
any call, the callback told that its sampling is drawn already (:data:`~.lean.SAMPLED_EXAMPLE`).

What the evaluation's metric calls is not announced to tracing (it is not part of the example's
trace).
"""

from __future__ import annotations

import contextvars
import time
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from opentelemetry.trace import Link, SpanContext

from dspex.lm.call_log import LMCallLog, current_log, logging_lm_calls
from dspex.observability.tracing.callback import end_lean
from dspex.observability.tracing.lean import SAMPLED_EXAMPLE, LeanSpan, sampled_now
from dspex.observability.tracing.recalled import Recall
from dspex.observability.tracing.sources import MODULE
from dspex.utils.callback import BaseCallback, muted, unmuted

if TYPE_CHECKING:
    from dspex.observability.tracing.provider import Recorder

__all__ = ["Examples"]

# What a sampled example's begin undid, for its end to redo: tracing's mute, the drawn decision.
_Heard = tuple[contextvars.Token[BaseCallback | None], contextvars.Token[int]]


class Examples:
    """Tracing's part in one local evaluation's examples (Evaluate's
    :class:`~dspex.utils.callback.ExampleHearing`)."""

    __slots__ = ("callback", "evaluation", "keep", "links", "program", "ratio")

    def __init__(
        self, callback: BaseCallback, recorder: Recorder, evaluation: SpanContext, program: Any
    ) -> None:
        self.callback, self.program = callback, program
        self.keep, self.ratio = recorder.keep, recorder.ratio
        self.evaluation = evaluation.span_id
        self.links = (Link(evaluation),)

    def running(self) -> _Worker:
        """Around the examples one worker runs in turn: tracing muted, their LM calls logged."""
        return _Worker(self)


class _Worker(AbstractContextManager["_Worker"]):
    """One worker's examples, one at a time: the ``begin`` and ``end`` of each."""

    __slots__ = ("dropped", "examples", "first", "log", "mute", "opened")

    def __init__(self, examples: Examples) -> None:
        self.examples = examples
        self.mute: contextvars.Token[BaseCallback | None] | None = None
        self.opened: AbstractContextManager[LMCallLog] | None = None
        self.first = self.dropped = 0

    def __enter__(self) -> _Worker:
        self.mute = muted(self.examples.callback)
        log = current_log()
        if log is None:  # the usual case; a log open around the evaluation is used as it is
            self.opened = logging_lm_calls()
            log = self.opened.__enter__()
        self.log = log
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.opened is not None:
            self.opened.__exit__(None, None, None)
            self.opened = None
        if self.mute is not None:
            unmuted(self.mute)
            self.mute = None

    def begin(self) -> object | None:
        """An example is about to run: None when it is not sampled (nothing announced to tracing),
        else what :meth:`end` undoes (tracing hears it, told that it is sampled)."""
        if sampled_now(self.examples.ratio):
            return muted(None), SAMPLED_EXAMPLE.set(self.examples.evaluation)
        log = self.log
        if self.opened is not None and log.calls:
            log.calls.clear()  # the worker's own log: the earlier examples' calls are done with
            log.dropped = 0
        self.first, self.dropped = len(log.calls), log.dropped
        return None

    def end(
        self, token: object | None, inputs: dict[str, Any], started: float, exception: BaseException | None
    ) -> None:
        """The example's program ended (``started``: its ``time.perf_counter()`` at the start)."""
        if token is not None:
            unmute, sampled = cast(_Heard, token)
            SAMPLED_EXAMPLE.reset(sampled)
            unmuted(unmute)
        elif exception is not None:
            self._failed(inputs, started, exception)

    def _failed(self, inputs: dict[str, Any], started: float, exception: BaseException) -> None:
        # what the callback would have made of the example's call, had it been announced: it is
        # exported as soon as it ends (its status is an error), with its LM calls after it
        examples = self.examples
        start_ns = time.time_ns() - int((time.perf_counter() - started) * 1e9)
        span = LeanSpan.example(examples.keep, examples.links, MODULE, examples.program, inputs, start_ns)
        recall = Recall(self.log, self.first, self.dropped)
        recall.close(span)
        span.after = recall.spans
        end_lean(span, None, exception)
