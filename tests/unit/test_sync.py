"""run_sync / run_in_thread: which loop a coroutine runs on, and that context travels with it."""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import threading

import pytest

import dspex
from dspex._sync import home_loop, home_loop_context, run_in_thread, run_sync
from dspex.utils.dummies import DummyLM

marker: contextvars.ContextVar[str] = contextvars.ContextVar("test_sync_marker", default="unset")
# nest_asyncio-style patching replaces this method; run_sync must leave the loop class alone.
_ORIGINAL_RUN_UNTIL = asyncio.BaseEventLoop.run_until_complete


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


async def test_run_sync_inside_a_running_loop_runs_on_the_bridge_without_touching_this_loop() -> None:
    # What a Jupyter cell does: a sync call while the kernel's loop runs on this thread.
    loop = asyncio.get_running_loop()
    marker.set("from-cell")
    inner_loop, thread_name, seen = run_sync(_where())
    assert thread_name == "dspex-bridge-loop" and inner_loop is not loop
    assert seen == "from-cell"
    assert asyncio.get_running_loop() is loop and type(loop).run_until_complete is _ORIGINAL_RUN_UNTIL
    assert await _where() == (loop, threading.current_thread().name, "from-cell")  # await still native


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


# ----------------------------------------------------------------------------------------------
# Sync calls from inside a running loop (notebooks), nesting, errors, interrupts
# ----------------------------------------------------------------------------------------------


def _thread_name() -> str:
    return threading.current_thread().name


async def _chain(depth: int) -> list[str]:
    """This coroutine's thread, then (blocking its own loop) a sync call of the next one down."""
    here = _thread_name()
    return [here] if depth == 0 else [here, *run_sync(_chain(depth - 1))]


async def test_a_sync_call_made_straight_from_a_coroutine_on_the_bridge_goes_one_loop_deeper() -> None:
    # cell (this loop) -> bridge; the coroutine there blocks the bridge with a sync call -> helper 1;
    # that one blocks helper 1 -> helper 2. Each waiting loop is skipped, so nothing deadlocks.
    assert run_sync(_chain(2)) == ["dspex-bridge-loop", "dspex-bridge-loop-1", "dspex-bridge-loop-2"]
    # the helpers are persistent and shared: the same path again starts no thread
    threads = threading.active_count()
    assert run_sync(_chain(2)) == ["dspex-bridge-loop", "dspex-bridge-loop-1", "dspex-bridge-loop-2"]
    assert threading.active_count() == threads


async def test_sync_in_async_in_sync_through_a_worker_thread_reuses_the_bridge() -> None:
    # cell -> bridge runs async code that dispatches a sync forward to a worker thread; the
    # forward's sync sub-call goes back to the bridge (its home), which is free while it awaits.
    marker.set("outer")

    async def program() -> tuple[str, str, list[str]]:
        def forward() -> tuple[str, str, list[str]]:
            _, inner_thread, seen = run_sync(_where())
            return inner_thread, seen, run_sync(_chain(1))

        return await run_in_thread(forward)

    inner_thread, seen, chain = run_sync(program())
    assert inner_thread == "dspex-bridge-loop" and seen == "outer"
    assert chain == ["dspex-bridge-loop", "dspex-bridge-loop-1"]


async def test_many_sync_calls_inside_a_loop_share_one_bridge_thread() -> None:
    run_sync(_where())  # the bridge exists from here on
    threads = threading.active_count()
    loops = {run_sync(_where())[0] for _ in range(50)}
    assert len(loops) == 1 and threading.active_count() == threads


async def test_context_overrides_apply_inside_a_running_loop() -> None:
    predict = dspex.Predict("question -> answer")
    with dspex.context(lm=DummyLM([{"answer": "4"}])):
        prediction = predict(question="2 + 2?")  # sync, as in a notebook cell
    assert prediction.answer == "4"
    again = await predict.acall(question="2 + 2?", lm=DummyLM([{"answer": "four"}]))
    assert again.answer == "four"


def test_the_coroutines_exception_reaches_the_caller_unchanged() -> None:
    raised = LookupError("the very object")

    async def boom() -> None:
        await asyncio.sleep(0)
        raise raised

    with pytest.raises(LookupError) as caught:
        run_sync(boom())
    assert caught.value is raised


async def test_the_coroutines_exception_reaches_the_caller_unchanged_inside_a_loop() -> None:
    test_the_coroutines_exception_reaches_the_caller_unchanged()


def test_keyboard_interrupt_while_waiting_cancels_the_coroutine() -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt() -> None:
        # lands anywhere in run_sync after the start was queued (the wait, or still queueing it)
        started.wait(10)
        os.kill(os.getpid(), signal.SIGINT)  # a real signal, as Ctrl-C or a kernel interrupt sends

    sender = threading.Thread(target=interrupt)
    sender.start()
    with pytest.raises(KeyboardInterrupt):
        run_sync(slow())
    sender.join()
    assert cancelled.wait(10)
    assert run_sync(_where())[1] == "dspex-bridge-loop"  # the bridge serves the next call


def test_keyboard_interrupt_raised_by_the_coroutine_reaches_the_caller_and_spares_the_bridge() -> None:
    async def interrupted() -> None:
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sync(interrupted())
    assert run_sync(_where())[1] == "dspex-bridge-loop"
