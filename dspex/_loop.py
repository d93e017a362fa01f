"""The event loop a worker process runs on: uvloop where it is installed, asyncio's own otherwise.

A worker's CPU per example is mostly event-loop work around each task: callbacks scheduled and run,
sockets written and read (an LM request, its answer), timers armed and cancelled. uvloop does that
work in C on libuv. ``bench/_predictor_cpu.py --examples 10000`` measured a predictor at 0.636 ms
of CPU per example on uvloop against 0.667 on asyncio's loop (means of five interleaved pairs on a
loaded machine, lower on uvloop in four; bench/RESULTS.md, issue 18). The aggregator: 0.137 -> 0.128
ms per score record (means of ten interleaved pairs, 6,000 records each, lower in seven); the
simulated LM: about a tenth less CPU per chat request (with its handler's own trims).

Only worker entry points use it (``dspex worker predict|score|optimize|intake``; ``aggregate``, whose
faust worker runs the loop :func:`set_worker_loop` gives it) and the simulated LM server process
(``dspex sim-lm``): the client and local ``Evaluate`` run on the loop of the user's program, which is
theirs to choose.
``DSPEX_EVENT_LOOP=asyncio`` runs a worker on asyncio's loop (``uvloop`` asks for uvloop and fails
when it is not installed; ``auto``, the default, takes uvloop when it imports). uvloop is a
dependency on Linux and macOS; it has no Windows build, so there the default is asyncio's loop.

    >>> run_worker_loop(worker.run())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, TypeVar

from dspex.errors import ConfigurationError

__all__ = ["EVENT_LOOP_VARIABLE", "LOOP_CHOICES", "loop_factory", "run_worker_loop", "set_worker_loop"]

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

EVENT_LOOP_VARIABLE: Final = "DSPEX_EVENT_LOOP"
LOOP_CHOICES: Final = ("auto", "uvloop", "asyncio")


def loop_factory(environ: Mapping[str, str] | None = None) -> LoopFactory:
    """The worker's loop factory as :data:`EVENT_LOOP_VARIABLE` asks (ConfigurationError naming the
    valid choices for any other value; ``uvloop`` when it is not installed too)."""
    choice = (environ if environ is not None else os.environ).get(EVENT_LOOP_VARIABLE, "auto").strip()
    choice = choice.lower() or "auto"
    if choice not in LOOP_CHOICES:
        raise ConfigurationError(
            f"{EVENT_LOOP_VARIABLE}={choice!r}: expected one of {', '.join(LOOP_CHOICES)}"
        )
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigurationError(
                f"{EVENT_LOOP_VARIABLE}=uvloop but uvloop is not installed ({exc}); pip install uvloop"
            ) from exc
        return asyncio.new_event_loop
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run_worker_loop(main: Coroutine[Any, Any, T], environ: Mapping[str, str] | None = None) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` picks."""
    try:
        factory = loop_factory(environ)
    except ConfigurationError:
        main.close()  # never awaited: no "coroutine was never awaited" warning on the way out
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def set_worker_loop(environ: Mapping[str, str] | None = None) -> asyncio.AbstractEventLoop:
    """A new loop from :func:`loop_factory`, made this thread's current loop, for a framework that
    runs the loop itself (faust's worker takes the current loop when it is built)."""
    loop = loop_factory(environ)()
    asyncio.set_event_loop(loop)
    return loop
