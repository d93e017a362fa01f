"""The channel from a streamed program run to the generator that yields its items, and the route that
tells each LM call of the run whether to stream into it."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from dspex._callers import CALLER_MODULES
from dspex.configuration import current_settings
from dspex.lm.sse import ChatChunk
from dspex.streaming._formats import Format
from dspex.streaming.streaming_listener import StreamListener, adapter_format

__all__ = ["CLOSED", "Channel", "Route", "StreamStart"]

CLOSED = object()  # the run is over: nothing follows


# How long a plain worker thread waits for its item to reach the queue (see Channel.send_nowait).
_HANDOFF_WAIT_S = 1.0


class Channel:
    """Items in arrival order from any thread of the run to one consumer on ``loop``.

    The queue is unbounded (it holds what the program produced and the consumer has not read yet),
    so sending never waits for the consumer.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    async def send(self, item: Any) -> None:
        """Send ``item`` (DSPy programs call ``await dspex.settings.send_stream.send(item)``)."""
        self.send_nowait(item)

    def send_nowait(self, item: Any) -> None:
        """Send ``item`` from any thread.

        From a plain worker thread (a sync tool's status message), the call returns once the item
        is in the queue, as DSPy's does: a "tool started" message is then out before the tool runs.
        The wait is bounded, in case the consumer's loop is itself blocked on this thread; an event
        loop thread never waits.
        """
        running = _running_loop()
        if running is self._loop:
            self._queue.put_nowait(item)
        elif self._loop.is_closed():
            return  # the run is over and its consumer gone: nobody reads this
        elif running is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        else:
            queued = threading.Event()
            self._loop.call_soon_threadsafe(self._put_and_set, item, queued)
            queued.wait(_HANDOFF_WAIT_S)

    def _put_and_set(self, item: Any, queued: threading.Event) -> None:
        self._queue.put_nowait(item)
        queued.set()

    async def receive(self) -> Any:
        """The next item (:data:`CLOSED` after the last one)."""
        return await self._queue.get()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass(frozen=True)
class StreamStart:
    """An LM stream of the predictor ``predict_id`` begins; its answer is in format ``fmt``."""

    predict_id: int | None
    fmt: Format | None


class _Sink:
    """One LM call's chunks into the channel, announced by a :class:`StreamStart`."""

    def __init__(self, channel: Channel, predict_id: int | None, fmt: Format | None) -> None:
        self.channel = channel
        self.predict_id = predict_id
        self.fmt = fmt
        self._announced = False

    async def send(self, chunk: ChatChunk) -> None:
        if not self._announced:
            self._announced = True
            self.channel.send_nowait(StreamStart(self.predict_id, self.fmt))
        self.channel.send_nowait(chunk)


class Route:
    """Which LM calls of a run stream: all of them without listeners (DSPy), else the calls of the
    predictors the listeners listen to."""

    def __init__(self, channel: Channel, listeners: dict[int, list[StreamListener]]) -> None:
        self.channel = channel
        self.listeners = listeners

    def open(self) -> _Sink | None:
        predict = _caller_predict()
        if self.listeners and (predict is None or id(predict) not in self.listeners):
            return None
        fmt = _format_of(predict) if self.listeners else None
        return _Sink(self.channel, None if predict is None else id(predict), fmt)


def _caller_predict() -> Any:
    """The predictor making the LM call here: the settings' ``caller_predict``, else the innermost
    predictor among the modules being called."""
    explicit = current_settings().caller_predict
    if explicit is not None:
        return explicit
    for module in reversed(CALLER_MODULES.get()):
        if getattr(module, "is_predictor", False):
            return module
    return None


def _format_of(predict: Any) -> Format | None:
    try:
        return adapter_format(getattr(predict, "adapter", None) or current_settings().adapter)
    except ValueError:
        return None  # the listener reports the unsupported adapter when it reads the chunk
