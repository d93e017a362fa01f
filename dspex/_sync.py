"""Running coroutines from sync code, and sync code from coroutines.

dspex is async inside; the sync API (``module(...)``, ``lm.complete(...)``) is a thin wrapper over
:func:`run_sync`. Where the coroutine runs depends on who is calling:

- sync code in a worker thread that async dspex code dispatched (a sync ``forward`` run by
  :func:`run_in_thread`): the thread's context names a *home loop*, and the coroutine runs there, so
  the LM clients, trace and usage of the surrounding call are the ones it uses;
- plain sync code (a script, a notebook cell, a thread of the user's): one process-wide *bridge* loop
  in a background thread runs it, persistent so that LM HTTP clients stay warm between calls;
- code already inside a running event loop on this thread: blocking here would deadlock the loop,
  so :func:`run_sync` refuses with a :class:`~dspex.errors.ConfigurationError` saying to ``await``.

In every case the caller's ``contextvars`` travel with the coroutine (settings overrides, the trace
collector and the usage trackers of an enclosing call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from dspex.errors import ConfigurationError

__all__ = ["DEFAULT_THREAD_POOL_SIZE", "home_loop", "home_loop_context", "run_in_thread", "run_sync"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Threads are started lazily by the pool, so a large bound costs nothing until sync user code
# actually runs that many calls at once (an Evaluate at concurrency 256 over a sync forward).
DEFAULT_THREAD_POOL_SIZE = 512

_home_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "dspex_home_loop", default=None
)


def home_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop that sync code running in this context should send coroutines to, if any."""
    return _home_loop.get()


@contextmanager
def home_loop_context(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Within the block, :func:`run_sync` sends coroutines to ``loop`` (used in worker threads)."""
    token = _home_loop.set(loop)
    try:
        yield
    finally:
        _home_loop.reset(token)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code and return its result (or raise its exception)."""
    if _running_loop() is not None:
        coro.close()  # never awaited: close it so Python does not warn about it
        raise ConfigurationError(
            "a sync dspex call was made from inside a running event loop, where blocking would "
            "deadlock it; use `await module.acall(...)` (or `await lm.acomplete(...)`) inside async code"
        )
    loop = _home_loop.get()
    if loop is None or loop.is_closed() or not loop.is_running():
        loop = _bridge_loop()
    return _submit(loop, coro).result()


async def run_in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run the sync callable ``fn(*args, **kwargs)`` in a worker thread and await its result.

    The thread gets a copy of the caller's context with the calling loop as its home loop, so sync
    dspex calls inside ``fn`` (a sub-module's ``__call__``) run on this loop and join the caller's
    trace and usage. Threads come from a shared pool of up to :data:`DEFAULT_THREAD_POOL_SIZE`.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    call = functools.partial(ctx.run, _call_at_home, loop, functools.partial(fn, *args, **kwargs))
    return await loop.run_in_executor(_thread_pool(), call)


def _call_at_home(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T:
    # Runs inside the copied context, so this setting is seen only by this call.
    _home_loop.set(loop)
    return fn()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _submit(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coro`` as a task on ``loop`` (another thread's) in a copy of the caller's context."""
    ctx = contextvars.copy_context()
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start() -> None:
        if not outcome.set_running_or_notify_cancel():
            coro.close()
            return
        task = loop.create_task(coro, context=ctx)
        task.add_done_callback(functools.partial(_copy_outcome, outcome))

    loop.call_soon_threadsafe(start)
    return outcome


def _copy_outcome(outcome: concurrent.futures.Future[T], task: asyncio.Task[T]) -> None:
    if task.cancelled():
        outcome.set_exception(concurrent.futures.CancelledError())
    elif (exc := task.exception()) is not None:
        outcome.set_exception(exc)
    else:
        outcome.set_result(task.result())


class _Bridge:
    """The process-wide background event loop that plain sync callers share."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="dspex-bridge-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()


_bridge: _Bridge | None = None
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _bridge_loop() -> asyncio.AbstractEventLoop:
    global _bridge
    with _lock:
        # A forked child inherits the object but not the thread: start a fresh one there.
        if _bridge is None or _bridge.pid != os.getpid() or _bridge.loop.is_closed():
            _bridge = _Bridge()
            logger.debug("started the dspex bridge event loop in pid %s", _bridge.pid)
        return _bridge.loop


def _thread_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=DEFAULT_THREAD_POOL_SIZE, thread_name_prefix="dspex-sync"
            )
        return _pool
