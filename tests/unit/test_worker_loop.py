"""The event loop a worker runs on (dspex._loop): uvloop by default, asyncio's on request."""

from __future__ import annotations

import asyncio
import sys

import pytest

from dspex._loop import EVENT_LOOP_VARIABLE, loop_factory, run_worker_loop, set_worker_loop
from dspex.errors import ConfigurationError

uvloop = pytest.importorskip("uvloop")


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_a_worker_runs_on_uvloop_by_default() -> None:
    assert run_worker_loop(_loop_type(), environ={}) is uvloop.Loop
    assert run_worker_loop(_loop_type(), environ={EVENT_LOOP_VARIABLE: " UVLOOP "}) is uvloop.Loop


def test_asyncio_asks_for_asyncios_own_loop() -> None:
    found = run_worker_loop(_loop_type(), environ={EVENT_LOOP_VARIABLE: "asyncio"})
    assert found is not uvloop.Loop
    assert issubclass(found, asyncio.BaseEventLoop)


def test_an_unknown_choice_is_a_configuration_error_naming_the_valid_ones() -> None:
    main = _loop_type()
    with pytest.raises(ConfigurationError, match="expected one of auto, uvloop, asyncio"):
        run_worker_loop(main, environ={EVENT_LOOP_VARIABLE: "trio"})
    assert main.cr_frame is None  # closed, never left unawaited


def test_without_uvloop_auto_falls_back_and_uvloop_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory({}) is asyncio.new_event_loop
    with pytest.raises(ConfigurationError, match="uvloop is not installed"):
        loop_factory({EVENT_LOOP_VARIABLE: "uvloop"})


def test_set_worker_loop_makes_the_chosen_loop_the_threads_current_one() -> None:
    # faust's app and worker take the thread's current loop when they are built (the aggregator)
    for environ, expected in (({}, uvloop.Loop), ({EVENT_LOOP_VARIABLE: "asyncio"}, None)):
        loop = set_worker_loop(environ)
        try:
            assert asyncio.get_event_loop() is loop
            assert type(loop) is expected if expected else not isinstance(loop, uvloop.Loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
