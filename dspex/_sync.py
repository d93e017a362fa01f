"""Running coroutines from sync code, and sync code from coroutines.

dspex is async inside; the sync API (``module(...)``, ``lm.complete(...)``, ``Evaluate(...)(program)``,
``optimizer.compile(...)``, ``client.evaluate(...)``) is a thin wrapper over :func:`run_sync`, which
blocks the calling thread while the coroutine runs on an event loop in *another* thread:

- sync code in a worker thread that async dspex code dispatched (a sync ``forward`` run by
  :func:`run_in_thread`): the thread's context names a *home loop*, and the coroutine runs there, so
  the LM clients, trace and usage of the surrounding call are the ones it uses;
- any other sync code (a script, a thread of the user's, a notebook cell, which Jupyter runs inside
  its own running event loop): a process-wide *bridge* loop in a background thread runs it,
  persistent so that LM HTTP sessions (one per loop, see :mod:`dspex.lm.transport`) stay warm
  between calls. The caller's own loop, if any, is only paused, never patched (no nest_asyncio).

A loop that a sync call is blocking can never be the target of a call it waits on, or the two would
wait for each other forever. The loops blocked along the current call path travel in a context
variable, and a call whose bridge is among them (sync code called straight from a coroutine that
itself runs on the bridge) goes to the next helper loop: helper loops are created only as deep as
such nesting goes, and are shared and persistent like the bridge.

In every case the caller's ``contextvars`` travel with the coroutine (settings overrides such as
``dspex.context(...)``, the trace collector and the usage trackers of an enclosing call), its
exception reaches the caller unchanged, and a ``KeyboardInterrupt`` while waiting cancels it.
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
from typing import Any, Generic, TypeVar

from dspex._anyio_worker import call_as_anyio_worker

__all__ = [
    "DEFAULT_THREAD_POOL_SIZE",
    "home_loop",
    "home_loop_context",
    "is_blocked",
    "run_in_thread",
    "run_sync",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Threads are started lazily by the pool, so a large bound costs nothing until sync user code
# actually runs that many calls at once (an Evaluate at concurrency 256 over a sync forward).
DEFAULT_THREAD_POOL_SIZE = 512

_home_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "dspex_home_loop", default=None
)
# The loops that sync calls on the current call path are blocking (each waits for what it started).
_blocked: contextvars.ContextVar[tuple[asyncio.AbstractEventLoop, ...]] = contextvars.ContextVar(
    "dspex_blocked_loops", default=()
)

# True on the call path of a sync entry point (``program(...)``), False under ``await program.acall``.
_called_sync: contextvars.ContextVar[bool] = contextvars.ContextVar("dspex_called_sync", default=False)


def called_from_sync() -> bool:
    """Whether the current call path began at a sync entry point (through :func:`run_sync`).

    A DSPy LM that overrides ``__call__`` is called the way the user called the program: its
    ``__call__`` under a sync call, its own ``acall`` under an async one (as DSPy's ``Predict`` does).
    """
    return _called_sync.get()


def home_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop that sync code running in this context should send coroutines to, if any."""
    return _home_loop.get()


def is_blocked(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether a sync call on the current call path is blocking ``loop`` (work sent there never runs)."""
    return loop in _blocked.get()


@contextmanager
def home_loop_context(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Within the block, :func:`run_sync` sends coroutines to ``loop`` (used in worker threads)."""
    token = _home_loop.set(loop)
    try:
        yield
    finally:
        _home_loop.reset(token)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code and return its result (or raise its exception).

    Works from plain sync code and from inside a running event loop alike (a Jupyter cell): that
    loop is blocked for the duration of the call, as any sync call blocks it.
    """
    blocked = _blocked.get()
    running = _running_loop()
    if running is not None and running not in blocked:
        blocked = (*blocked, running)
    return _Call(_target_loop(blocked), coro, blocked).run()


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
    return call_as_anyio_worker(loop, fn)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _target_loop(blocked: tuple[asyncio.AbstractEventLoop, ...]) -> asyncio.AbstractEventLoop:
    """The home loop if it can serve the call, else the first helper loop that is not blocked."""
    home = _home_loop.get()
    if home is not None and home not in blocked and home.is_running() and not home.is_closed():
        return home
    return _helper_loop(blocked)


class _Call(Generic[T]):
    """One coroutine run on another thread's loop, in a copy of the caller's context."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, T],
        blocked: tuple[asyncio.AbstractEventLoop, ...],
    ) -> None:
        self.loop = loop
        self.coro = coro
        self.ctx = contextvars.copy_context()
        self.ctx.run(_blocked.set, blocked)
        self.ctx.run(_called_sync.set, True)
        self.outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.task: asyncio.Task[T] | None = None

    def run(self) -> T:
        """Start the coroutine and block until it finishes; an interrupt meanwhile cancels it."""
        # An interrupt (KeyboardInterrupt) can land anywhere in here, even inside
        # call_soon_threadsafe after it queued _start: wherever it lands, the work must stop too.
        try:
            self.loop.call_soon_threadsafe(self._start)
            return self.outcome.result()
        except BaseException:
            if not self.outcome.done():
                self._stop()
            raise

    def _start(self) -> None:
        self.task = self.loop.create_task(self.coro, context=self.ctx)
        self.task.add_done_callback(self._finish)

    def _stop(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._cancel)
        except RuntimeError:  # the loop is closed: nothing runs there, only the coroutine is left
            if self.task is None:
                self.coro.close()  # never awaited: close it so Python does not warn about it

    def _cancel(self) -> None:
        # Callbacks run in order, so a queued _start has run by now and made the task.
        if self.task is None:
            self.coro.close()  # interrupted before _start was queued
        else:
            self.task.cancel()

    def _finish(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self.outcome.set_exception(concurrent.futures.CancelledError())
        elif (exc := task.exception()) is not None:
            self.outcome.set_exception(exc)
        else:
            self.outcome.set_result(task.result())


class _LoopThread:
    """A persistent event loop in a daemon thread of its own (the bridge, or a deeper helper)."""

    def __init__(self, depth: int) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        name = "dspex-bridge-loop" if depth == 0 else f"dspex-bridge-loop-{depth}"
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    @property
    def usable(self) -> bool:
        # A forked child inherits the object but not the thread: it needs a fresh one.
        return self.pid == os.getpid() and self.thread.is_alive() and not self.loop.is_closed()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        while True:
            try:
                self.loop.run_forever()
                return
            except (KeyboardInterrupt, SystemExit):
                # asyncio re-raises these out of the loop after storing them in the task that raised
                # them; that task's caller gets them (its done callback runs once the loop resumes),
                # so the loop goes on serving every other caller.
                logger.debug("a coroutine on %s raised KeyboardInterrupt/SystemExit", self.thread.name)


_helpers: list[_LoopThread] = []
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _helper_loop(blocked: tuple[asyncio.AbstractEventLoop, ...]) -> asyncio.AbstractEventLoop:
    """The bridge (depth 0), or the shallowest helper loop not blocked on this call path."""
    with _lock:
        depth = 0
        while True:
            if depth == len(_helpers):
                _helpers.append(_LoopThread(depth))
                logger.debug("started dspex bridge event loop %d in pid %s", depth, os.getpid())
            elif not _helpers[depth].usable:
                _helpers[depth] = _LoopThread(depth)
            loop = _helpers[depth].loop
            if loop not in blocked:
                return loop
            depth += 1


def _thread_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=DEFAULT_THREAD_POOL_SIZE, thread_name_prefix="dspex-sync"
            )
        return _pool
