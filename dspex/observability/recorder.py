"""User callbacks in a worker, and their events in the prediction's result.

A predictor started with ``--callback pkg.mod:Name`` runs that callback in every program it runs, as
``dspex.configure(callbacks=[...])`` would locally. The user cannot see a worker's stdout, so each
callback is wrapped in a :class:`RecordedCallback`: every hook call is forwarded to it and written
down (hook, call id, time, the data it was given in JSON form, what it returned or raised) into the
events of the prediction running at that moment (:func:`recording`), which the predictor stores in
its :class:`~dspex.schemas.PredictionRecord` as ``callback_events``.

    recorded = RecordedCallback(MyCallback(), "mypkg.callbacks:MyCallback")
    with dspex.context(callbacks=[recorded]), recording() as events:
        await program.acall(question="2 + 3?")
    events.events  # [CallbackEvent(hook="on_module_start", ...), ...]
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from pydantic_core import to_jsonable_python

from dspex.lm.events import LMAttempt, LMRequest
from dspex.schemas.common import CallbackEvent
from dspex.utils.callback import BaseCallback

__all__ = ["MAX_EVENTS", "EventLog", "RecordedCallback", "recording"]

MAX_EVENTS: Final = 500  # per prediction; a program looping over an LM must not grow its result without bound
_MAX_TEXT: Final = 1000  # characters kept of each string (prompts are long)
_MAX_ITEMS: Final = 100  # items kept of each list


class EventLog:
    """The callback events of one prediction (at most :data:`MAX_EVENTS`; ``dropped`` counts the rest)."""

    __slots__ = ("dropped", "events", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.events: list[CallbackEvent] = []
        self.dropped = 0

    def add(self, event: CallbackEvent) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append(event)
        else:
            self.dropped += 1

    def recorded(self) -> list[CallbackEvent] | None:
        """The events for the result: None when there were none, a last ``events_dropped`` entry
        when some did not fit."""
        if self.dropped:
            marker = CallbackEvent(callback="dspex", hook="events_dropped", data={"dropped": self.dropped})
            return [*self.events, marker]
        return list(self.events) or None


_LOG: contextvars.ContextVar[EventLog | None] = contextvars.ContextVar("dspex_callback_events", default=None)


@contextmanager
def recording() -> Iterator[EventLog]:
    """Collect the events of the recorded callbacks called inside the block (this task and the tasks
    and threads it starts)."""
    log = EventLog()
    token = _LOG.set(log)
    try:
        yield log
    finally:
        _LOG.reset(token)


class RecordedCallback(BaseCallback):
    """Forwards every hook to ``callback`` and records the call in the current :func:`recording`.

    A hook that raises is recorded with its error and re-raised (the dispatcher logs it and the call
    goes on, as for any callback).
    """

    def __init__(self, callback: Any, name: str) -> None:
        self.callback = callback
        self.name = name

    def __repr__(self) -> str:
        return f"RecordedCallback({self.name})"

    # -- DSPy's hooks ---------------------------------------------------------------------------

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("on_module_start", call_id, instance, inputs)

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end("on_module_end", call_id, outputs, exception)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("on_lm_start", call_id, instance, inputs)

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        self._end("on_lm_end", call_id, outputs, exception)

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("on_adapter_format_start", call_id, instance, inputs)

    def on_adapter_format_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end("on_adapter_format_end", call_id, outputs, exception)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("on_adapter_parse_start", call_id, instance, inputs)

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end("on_adapter_parse_end", call_id, outputs, exception)

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("on_tool_start", call_id, instance, inputs)

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        self._end("on_tool_end", call_id, outputs, exception)

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("on_evaluate_start", call_id, instance, inputs)

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end("on_evaluate_end", call_id, outputs, exception)

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("on_compile_start", call_id, instance, inputs)

    def on_compile_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._end("on_compile_end", call_id, outputs, exception)

    # -- dspex's LM events ----------------------------------------------------------------------

    def on_lm_attempt(self, call_id: str | None, instance: Any, attempt: LMAttempt) -> None:
        args = (call_id, instance, attempt)
        self._forward("on_lm_attempt", args, call_id, instance, attempt._asdict())

    def on_lm_request(self, call_id: str | None, instance: Any, request: LMRequest) -> None:
        args = (call_id, instance, request)
        self._forward("on_lm_request", args, call_id, instance, request._asdict())

    # -- forwarding -----------------------------------------------------------------------------

    def _start(self, hook: str, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._forward(hook, (call_id, instance, inputs), call_id, instance, inputs)

    def _end(self, hook: str, call_id: str, outputs: Any, exception: BaseException | None) -> None:
        self._forward(hook, (call_id, outputs, exception), call_id, None, outputs, exception)

    def _forward(
        self,
        hook: str,
        args: tuple[Any, ...],
        call_id: str | None,
        instance: Any,
        data: Any,
        exception: BaseException | None = None,
    ) -> None:
        handler = getattr(self.callback, hook, None)
        if handler is None:  # a callback written for DSPy has no on_lm_attempt / on_lm_request
            return
        returned, failure = None, None
        try:
            returned = handler(*args)
        except Exception as exc:
            failure = exc
        _record(self.name, hook, call_id, instance, data, exception, returned, failure)
        if failure is not None:
            raise failure


def _record(
    name: str,
    hook: str,
    call_id: str | None,
    instance: Any,
    data: Any,
    exception: BaseException | None,
    returned: Any,
    failure: Exception | None,
) -> None:
    log = _LOG.get()
    if log is None:  # a call outside any prediction (e.g. the worker loading a program)
        return
    log.add(
        CallbackEvent(
            callback=name,
            hook=hook,
            call_id=call_id,
            at_s=max(time.perf_counter() - log.started, 0.0),
            instance=type(instance).__name__ if instance is not None else None,
            data=compact(data),
            error=_describe(exception),
            returned=compact(returned),
            hook_error=_describe(failure),
        )
    )


def compact(value: Any) -> Any:
    """``value`` in JSON form with strings cut to 1,000 characters and lists to 100 items."""
    return _trim(to_jsonable_python(value, fallback=repr))


def _trim(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else f"{value[:_MAX_TEXT]}... ({len(value)} characters)"
    if isinstance(value, list):
        kept = [_trim(item) for item in value[:_MAX_ITEMS]]
        return kept if len(value) <= _MAX_ITEMS else [*kept, f"... ({len(value)} items)"]
    if isinstance(value, dict):
        return {str(key): _trim(item) for key, item in value.items()}
    return value


def _describe(exc: BaseException | None) -> str | None:
    return None if exc is None else f"{type(exc).__name__}: {str(exc)[:_MAX_TEXT]}"
