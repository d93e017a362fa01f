"""Sync code that dspex runs in a worker thread can reach the event loop through anyio, as in DSPy,
where a sync program runs in an anyio worker thread: a sync ``forward`` that sends its own chunks to
the stream with ``anyio.from_thread.run`` is streamed."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
import pytest

from dspex._sync import run_in_thread
from dspex.configuration import current_settings
from dspex.primitives import Module, Prediction
from dspex.streaming import streamify


@dataclass
class Progress:
    step: int


class Counts(Module):
    def forward(self, upto: int) -> Prediction:
        async def send(step: int) -> None:
            await current_settings().send_stream.send(Progress(step))

        for step in range(upto):
            anyio.from_thread.run(send, step)
        return Prediction(done=upto)


async def test_a_sync_forward_sends_its_own_chunks_through_anyio() -> None:
    items = [item async for item in streamify(Counts())(upto=3)]
    assert items[:3] == [Progress(0), Progress(1), Progress(2)]
    assert isinstance(items[3], Prediction) and items[3].done == 3


async def test_a_worker_thread_calls_back_into_the_loop_that_waits_for_it() -> None:
    loop_thread = threading.get_ident()

    def in_worker() -> tuple[int, int]:
        return threading.get_ident(), anyio.from_thread.run_sync(threading.get_ident)

    worker, called_back = await run_in_thread(in_worker)
    assert worker != loop_thread and called_back == loop_thread


def test_a_thread_dspex_did_not_start_is_not_an_anyio_worker() -> None:
    def outside() -> Any:
        return anyio.from_thread.run_sync(lambda: None)

    with pytest.raises(Exception, match="AnyIO worker thread"):
        asyncio.run(asyncio.to_thread(outside))
