"""run_sync / run_in_thread: which loop a coroutine runs on, and that context travels with it."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from dspex._sync import home_loop, home_loop_context, run_in_thread, run_sync
from dspex.errors import ConfigurationError

marker: contextvars.ContextVar[str] = contextvars.ContextVar("test_sync_marker", default="unset")


async def _where() -> tuple[asyncio.AbstractEventLoop, str, str]:
    await asyncio.sleep(0)
    return asyncio.get_running_loop(), threading.current_thread().name, marker.get()


def test_run_sync_from_plain_sync_code_uses_one_persistent_bridge_loop() -> None:
    token = marker.set("from-caller")
    try:
        first_loop, thread_name, seen = run_sync(_where())
        second_loop, _, _ = run_sync(_where())
    finally:
        marker.reset(token)
    assert thread_name == "dspex-bridge-loop"
    assert seen == "from-caller"
    assert first_loop is second_loop and first_loop.is_running()


def test_run_sync_raises_the_coroutines_exception() -> None:
    async def boom() -> None:
        raise ValueError("from inside")

    with pytest.raises(ValueError, match="from inside"):
        run_sync(boom())


def test_run_sync_from_a_users_thread_goes_to_the_bridge() -> None:
    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(run_sync(_where())[1]))
    thread.start()
    thread.join()
    assert results == ["dspex-bridge-loop"]


async def test_run_sync_inside_a_running_loop_is_a_clear_error() -> None:
    async def never() -> None:
        raise AssertionError("must not run")

    with pytest.raises(ConfigurationError, match=r"await module\.acall"):
        run_sync(never())


async def test_run_in_thread_sends_sync_calls_back_to_the_calling_loop() -> None:
    loop = asyncio.get_running_loop()
    marker.set("from-task")

    def sync_user_code() -> tuple[asyncio.AbstractEventLoop | None, asyncio.AbstractEventLoop, str, str]:
        inner_loop, _, seen = run_sync(_where())
        return home_loop(), inner_loop, threading.current_thread().name, seen

    home, inner_loop, thread_name, seen = await run_in_thread(sync_user_code)
    assert home is loop and inner_loop is loop
    assert thread_name.startswith("dspex-sync")
    assert seen == "from-task"
    assert home_loop() is None  # set only inside the worker's copied context


async def test_run_in_thread_passes_arguments_and_exceptions() -> None:
    assert await run_in_thread(lambda a, *, b: a + b, 2, b=3) == 5

    def fails() -> None:
        raise KeyError("sync failure")

    with pytest.raises(KeyError, match="sync failure"):
        await run_in_thread(fails)


async def test_many_threads_under_one_loop_do_not_block_it() -> None:
    release = asyncio.Event()
    all_waiting = asyncio.Event()
    waiting = 0

    async def wait_for_release() -> str:
        nonlocal waiting
        waiting += 1  # runs on the loop: no lock needed
        if waiting == 20:
            all_waiting.set()
        await release.wait()
        return marker.get()

    def sync_call(i: int) -> str:
        marker.set(f"call-{i}")
        return run_sync(wait_for_release())

    calls = [asyncio.ensure_future(run_in_thread(sync_call, i)) for i in range(20)]
    # 20 worker threads block at once while the loop keeps running their coroutines.
    await asyncio.wait_for(all_waiting.wait(), timeout=10)
    assert not any(call.done() for call in calls)
    release.set()
    assert await asyncio.gather(*calls) == [f"call-{i}" for i in range(20)]


def test_home_loop_context_falls_back_to_the_bridge_when_the_home_loop_is_not_running() -> None:
    stopped = asyncio.new_event_loop()
    try:
        with home_loop_context(stopped):
            assert home_loop() is stopped
            _, thread_name, _ = run_sync(_where())
        assert home_loop() is None
    finally:
        stopped.close()
    assert thread_name == "dspex-bridge-loop"
