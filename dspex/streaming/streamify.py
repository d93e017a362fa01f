"""``streamify``: run a program and yield what it produces while it runs.

    program = dspex.streamify(
        dspex.ChainOfThought("question -> answer"),
        stream_listeners=[dspex.streaming.StreamListener(signature_field_name="answer")],
    )
    async for item in program(question="Why is the sky blue?"):
        if isinstance(item, dspex.streaming.StreamResponse):
            print(item.chunk, end="", flush=True)
        elif isinstance(item, dspex.Prediction):
            result = item

What comes out, in order: :class:`StreamResponse` chunks of the listened fields (or, with no listeners,
the LM's raw :class:`~dspex.lm.sse.ChatChunk` s of every call), :class:`StatusMessage` s, anything the
program sends itself (``await dspex.settings.send_stream.send(x)``), and last the program's result.
The LM streams over server-sent events (see :mod:`dspex.lm.sse`); usage and cost are counted as for
any call, and a cached answer does not stream (only the result comes out).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import Any

from dspex._sync import run_in_thread, run_sync
from dspex.configuration import context, current_settings
from dspex.errors import InputError
from dspex.lm.sse import ChatChunk, stream_route
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.streaming._channel import CLOSED, Channel, Route, StreamStart
from dspex.streaming.messages import (
    StatusMessage,
    StatusMessageProvider,
    StatusStreamingCallback,
    StreamResponse,
)
from dspex.streaming.streaming_listener import StreamListener, find_predictor_for_stream_listeners

__all__ = ["apply_sync_streaming", "streamify", "streaming_response"]


def streamify(
    program: Any,
    status_message_provider: StatusMessageProvider | None = None,
    stream_listeners: list[StreamListener] | None = None,
    include_final_prediction_in_output_stream: bool = True,
    is_async_program: bool = False,
    async_streaming: bool = True,
) -> Callable[..., Any]:
    """Wrap ``program`` so that calling it gives a generator of its outputs as they are produced.

    ``stream_listeners``: stream these output fields (:class:`StreamListener`); without any, the LM
    chunks of every call come out as they are. ``include_final_prediction_in_output_stream=False``
    leaves the final :class:`~dspex.Prediction` out when listeners streamed something (it still comes
    out when nothing streamed, e.g. a cached answer). ``is_async_program=True`` calls
    ``program.acall``; otherwise the program is called as a sync callable in a worker thread (a dspex
    module is called through ``acall`` unless it overrides ``__call__``). ``async_streaming=False``
    gives a sync generator instead of an async one.
    """
    listeners = list(stream_listeners or [])
    by_predict = find_predictor_for_stream_listeners(program, listeners) if listeners else {}
    callbacks = list(current_settings().callbacks)
    if not any(isinstance(callback, StatusStreamingCallback) for callback in callbacks):
        callbacks.append(StatusStreamingCallback(status_message_provider))
    call = _caller(program, is_async_program)

    async def run(
        channel: Channel,
        run_listeners: dict[int, list[StreamListener]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        route = Route(channel, run_listeners)
        with (
            context(send_stream=channel, callbacks=callbacks, stream_listeners=listeners),
            stream_route(route),
        ):
            return await call(*args, **kwargs)

    async def async_streamer(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        # each run listens with fresh copies: runs one after another, or at once, never share state
        run_listeners = {
            key: [listener.fresh_copy() for listener in group] for key, group in by_predict.items()
        }
        channel = Channel(asyncio.get_running_loop())
        task = asyncio.create_task(run(channel, run_listeners, args, kwargs))
        task.add_done_callback(lambda _: channel.send_nowait(CLOSED))
        try:
            async for item in _items(channel, run_listeners):
                yield item
            result = await task  # the program's own exception, as it raised it
            every = [listener for group in run_listeners.values() for listener in group]
            for item in _final_items(result, every, include_final_prediction_in_output_stream):
                yield item
        finally:
            if not task.done():  # the consumer stopped early
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    if async_streaming:
        return async_streamer

    def sync_streamer(*args: Any, **kwargs: Any) -> Generator[Any, None, None]:
        return apply_sync_streaming(async_streamer(*args, **kwargs))

    return sync_streamer


def _caller(program: Any, is_async_program: bool) -> Callable[..., Any]:
    """How to call ``program`` from the streaming task."""
    if is_async_program:
        acall: Callable[..., Any] = program.acall
        return acall
    if isinstance(program, Module) and type(program).__call__ is Module.__call__:
        return program.acall  # the same call as Module.__call__, without a thread hop
    if asyncio.iscoroutinefunction(program):
        coroutine_function: Callable[..., Any] = program
        return coroutine_function

    async def in_thread(*args: Any, **kwargs: Any) -> Any:
        return await run_in_thread(program, *args, **kwargs)

    return in_thread


async def _items(channel: Channel, by_predict: dict[int, list[StreamListener]]) -> AsyncIterator[Any]:
    """What the run sends, until it ends: LM chunks through the listeners, the rest as it is."""
    while (item := await channel.receive()) is not CLOSED:
        if isinstance(item, StreamStart):
            for listener in _listeners_of(by_predict, item.predict_id):
                listener.begin_stream(item.fmt)
        elif isinstance(item, ChatChunk) and by_predict:
            for listener in _listeners_of(by_predict, item.predict_id):
                if (response := listener.receive(item)) is not None:
                    yield response
        else:
            yield item


def _listeners_of(
    by_predict: dict[int, list[StreamListener]], predict_id: int | None
) -> list[StreamListener]:
    return by_predict.get(predict_id, []) if predict_id is not None else []


def _final_items(result: Any, listeners: list[StreamListener], include_prediction: bool) -> Iterator[Any]:
    """The listeners' held-back last chunks, then the result (DSPy's rules for leaving it out)."""
    if not isinstance(result, Prediction):
        yield result
        return
    for listener in listeners:
        if (last := listener.finalize()) is not None:
            yield last
    streamed = any(listener.stream_start for listener in listeners)
    cached = any(listener.cache_hit for listener in listeners)
    if include_prediction or not listeners or cached or not streamed:
        yield result


def apply_sync_streaming(async_generator: AsyncGenerator[Any, None]) -> Generator[Any, None, None]:
    """The items of ``async_generator`` as a sync generator, each as soon as it is produced.

    The async generator runs on dspex's background event loop, in a copy of the caller's context
    (settings, trace); stopping early (``break``) stops it.
    """
    items: queue.Queue[tuple[str, Any]] = queue.Queue()
    ctx = contextvars.copy_context()
    pump = _Pump(async_generator, items)
    thread = threading.Thread(target=ctx.run, args=(pump.run,), name="dspex-sync-stream", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        pump.stop()


class _Pump:
    """Drains an async generator into a thread-safe queue, on dspex's bridge loop."""

    def __init__(self, source: AsyncGenerator[Any, None], sink: queue.Queue[tuple[str, Any]]) -> None:
        self.source = source
        self.sink = sink
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            run_sync(self._drain())
        except BaseException as exc:  # handed to the consuming thread, which raises it
            self.sink.put(("error", exc))
        finally:
            self.sink.put(("done", None))

    async def _drain(self) -> None:
        self._task, self._loop = asyncio.current_task(), asyncio.get_running_loop()
        if self._stopped.is_set():
            return
        try:
            async for item in self.source:
                self.sink.put(("item", item))
        except asyncio.CancelledError:
            if not self._stopped.is_set():
                raise
        finally:
            await self.source.aclose()

    def stop(self) -> None:
        self._stopped.set()
        if self._task is not None and self._loop is not None and not self._task.done():
            self._loop.call_soon_threadsafe(self._task.cancel)


async def streaming_response(streamer: AsyncIterator[Any]) -> AsyncGenerator[str, None]:
    """A streamed program's items as server-sent events for an HTTP response (OpenAI's framing).

    The result becomes ``data: {"prediction": {...}}``, an LM chunk ``data: {"chunk": ...}``; a
    listener's chunk ``data: {"stream_response": {...}}`` and a status message
    ``data: {"status_message": "..."}`` (DSPy raises on these two); text already framed as
    ``data: ...`` passes through; anything else is an :class:`~dspex.errors.InputError`. The
    stream ends with ``data: [DONE]``.
    """
    async for value in streamer:
        if isinstance(value, str) and value.startswith("data:"):
            yield value
        else:
            yield f"data: {json.dumps(_event_of(value), ensure_ascii=False, default=str)}\n\n"
    yield "data: [DONE]\n\n"


def _event_of(value: Any) -> dict[str, Any]:
    if isinstance(value, Prediction):
        return {"prediction": dict(value.items(include_dspy=False))}
    if isinstance(value, ChatChunk):
        return {"chunk": value.json()}
    if isinstance(value, StreamResponse):
        return {"stream_response": {**vars(value), "chunk": _jsonable(value.chunk)}}
    if isinstance(value, StatusMessage):
        return {"status_message": value.message}
    raise InputError(f"Unknown chunk value type: {value}")


def _jsonable(chunk: Any) -> Any:
    dump = getattr(chunk, "model_dump", None)
    return dump() if callable(dump) else chunk
