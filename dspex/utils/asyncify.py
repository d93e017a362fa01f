"""DSPy's ``asyncify`` and ``syncify``, for code that uses them.

dspex modules are async at heart (``await module.acall(...)``) and callable from sync code
(``module(...)``, inside a running loop too), so both are thin: ``asyncify`` gives a coroutine function
(a dspex module's own ``acall``; any other callable runs in a worker thread with the caller's context,
at most ``settings.async_max_workers`` at once, as in DSPy), and ``syncify`` has nothing to convert.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from dspex._sync import run_in_thread

__all__ = ["asyncify", "get_limiter", "syncify"]

_limiter: anyio.CapacityLimiter | None = None


def get_limiter() -> anyio.CapacityLimiter:
    """The one limiter of the threads ``asyncify`` runs callables in, its capacity kept equal to
    ``dspex.settings.async_max_workers`` as read here."""
    from dspex.configuration import current_settings

    global _limiter
    workers = current_settings().async_max_workers
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(workers)
    elif _limiter.total_tokens != workers:
        _limiter.total_tokens = workers
    return _limiter


def asyncify(program: Any) -> Callable[..., Awaitable[Any]]:
    """An async function that runs ``program``: ``await asyncify(qa)(question="...")``."""
    acall = getattr(program, "acall", None)
    if callable(acall):
        bound: Callable[..., Awaitable[Any]] = acall
        return bound

    async def run(*args: Any, **kwargs: Any) -> Any:
        async with get_limiter():
            return await run_in_thread(program, *args, **kwargs)

    return run


def syncify(program: Any, in_place: bool = True) -> Any:
    """``program`` itself: a dspex module with only ``aforward`` is already callable from sync code."""
    return program
