"""DSPy's ``asyncify`` and ``syncify``, for code that uses them.

dspex modules are async at heart (``await module.acall(...)``) and callable from sync code
(``module(...)``, inside a running loop too), so both are thin: ``asyncify`` gives a coroutine function
(a dspex module's own ``acall``; any other callable runs in a worker thread with the caller's context),
and ``syncify`` has nothing to convert.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from dspex._sync import run_in_thread

__all__ = ["asyncify", "syncify"]


def asyncify(program: Any) -> Callable[..., Awaitable[Any]]:
    """An async function that runs ``program``: ``await asyncify(qa)(question="...")``."""
    acall = getattr(program, "acall", None)
    if callable(acall):
        bound: Callable[..., Awaitable[Any]] = acall
        return bound

    async def run(*args: Any, **kwargs: Any) -> Any:
        return await run_in_thread(program, *args, **kwargs)

    return run


def syncify(program: Any, in_place: bool = True) -> Any:
    """``program`` itself: a dspex module with only ``aforward`` is already callable from sync code."""
    return program
