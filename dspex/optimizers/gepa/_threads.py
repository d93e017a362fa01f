"""Helper threads for the calls GEPA makes at the same time: gepa's engine is sync, so each
evaluation, reflection and hedge made beside another waits in a thread of its own.

The threads are reused, not started per call: a run of bench/gepa_vs_dspy.py (seed 0, 0.1 s)
started about 130, and each start made the caller wait until the new thread was scheduled (0.4 s
of a 3.8 s run on a loaded 2-core machine). An idle thread takes the next call; another is started
only when none is idle. The bound is far above the calls a run has waiting at once (a call that
waits for calls it started always finds a thread for them); idle threads stay for the next run and
end with the interpreter.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextvars import copy_context
from typing import TypeVar

__all__ = ["run_all", "start"]

T = TypeVar("T")

# Threads at most: never reached (a run has a few dozen calls waiting at once).
_MAX_THREADS = 1024

_lock = threading.Lock()
_executors: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked child starts its own


def _executor() -> ThreadPoolExecutor:
    pid = os.getpid()
    with _lock:
        executor = _executors.get(pid)
        if executor is None:
            _executors.clear()  # a parent's executor has no threads in this process
            executor = ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="dspex-gepa")
            _executors[pid] = executor
        return executor


def start(call: Callable[[], T]) -> Future[T]:
    """``call()`` started in a helper thread, with the caller's context (LM, settings, usage
    trackers)."""
    return _executor().submit(copy_context().run, call)


def run_all(calls: Sequence[Callable[[], T]], at_once: int | None = None) -> list[T]:
    """The calls' results in order, the calls made at the same time (``at_once`` at most, the next
    started as one ends), each with a copy of the caller's context; all have ended when it returns
    or raises (the first failure in order)."""
    threads = len(calls) if at_once is None else max(1, min(at_once, len(calls)))
    if threads >= len(calls):
        futures = [start(call) for call in calls]
    else:
        futures = [Future() for _ in calls]
        pending = iter(zip([copy_context() for _ in calls], calls, futures, strict=True))
        taking = threading.Lock()

        def take_in_turn() -> None:
            while True:
                with taking:
                    nxt = next(pending, None)
                if nxt is None:
                    return
                ctx, call, future = nxt
                try:
                    future.set_result(ctx.run(call))
                except BaseException as exc:
                    future.set_exception(exc)

        wait([start(take_in_turn) for _ in range(threads)])
    wait(futures)
    return [future.result() for future in futures]
