"""Sync code that dspex runs in a worker thread may call back into the event loop with anyio.

DSPy runs a sync program in an anyio worker thread (``anyio.to_thread``), and DSPy code written for
it calls ``anyio.from_thread.run(...)`` from a sync ``forward``, for instance to send its own chunks
to a ``streamify`` stream (``await dspy.settings.send_stream.send(chunk)``). dspex's worker threads
are its own (:func:`dspex._sync.run_in_thread`): :func:`call_as_anyio_worker` gives them what anyio
looks for in its own workers, the token of the loop that waits for them.

anyio has no public way to mark a thread as its worker, so this reaches into its private thread
state; when that is missing (another anyio version), the call runs as before, without the mark.
Nothing is done while anyio is not imported: only code that imported it can call into it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["call_as_anyio_worker"]

T = TypeVar("T")

_marker: tuple[Any, Any, Any] | None = None  # (thread locals, EventLoopToken, asyncio backend)
_unavailable = False
# The token of the loop seen last (tokens are immutable; nearly every call is from the same loop).
_last: tuple[asyncio.AbstractEventLoop | None, Any] = (None, None)


def call_as_anyio_worker(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T:
    """``fn()``, seen by anyio's ``from_thread`` functions as running in a worker of ``loop``.

    Only for dspex's own pool threads, which run one call at a time: the mark is set for the call
    and removed after it (no earlier mark to keep).
    """
    if _unavailable or "anyio" not in sys.modules:
        return fn()
    marker = _marker or _find_marker()
    if marker is None:
        return fn()
    threadlocals = marker[0]
    threadlocals.current_token = _token(marker, loop)
    try:
        return fn()
    finally:
        del threadlocals.current_token


def _token(marker: tuple[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> Any:
    global _last
    seen, token = _last
    if seen is not loop:
        token = marker[1](marker[2], loop)
        _last = (loop, token)
    return token


def _find_marker() -> tuple[Any, Any, Any] | None:
    global _marker, _unavailable
    try:
        from anyio._backends._asyncio import backend_class
        from anyio._core._eventloop import threadlocals
        from anyio.lowlevel import EventLoopToken
    except ImportError:
        _unavailable = True
        return None
    _marker = (threadlocals, EventLoopToken, backend_class)
    return _marker
