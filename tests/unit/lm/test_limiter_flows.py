"""The limiter serves waiting calls per flow in turn: a small job's calls do not wait behind a big job's."""

from __future__ import annotations

import asyncio

from dspex.lm.limiter import AdaptiveLimiter, limiter_flow


async def _wait_as(limiter: AdaptiveLimiter, flow: str, granted: list[str]) -> None:
    with limiter_flow(flow):
        await limiter.acquire()
    granted.append(flow)


async def _queue(limiter: AdaptiveLimiter, flows: list[str], granted: list[str]) -> list[asyncio.Task[None]]:
    tasks = []
    for flow in flows:
        tasks.append(asyncio.create_task(_wait_as(limiter, flow, granted)))
        await asyncio.sleep(0)  # queued in this order
    return tasks


async def test_freed_slots_go_to_the_flows_in_turn() -> None:
    limiter = AdaptiveLimiter(initial=1, maximum=1)
    await limiter.acquire()  # the one slot is taken: everything below waits
    granted: list[str] = []
    tasks = await _queue(limiter, ["big"] * 6 + ["small"] * 2, granted)
    assert limiter.waiting == 8
    for _ in range(4):
        limiter.release()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert granted == ["big", "small", "big", "small"]  # FIFO would have served six bigs first
    for _ in range(4):
        limiter.release()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert granted[4:] == ["big"] * 4 and limiter.waiting == 0


async def test_calls_outside_any_flow_keep_arrival_order() -> None:
    limiter = AdaptiveLimiter(initial=1, maximum=1)
    await limiter.acquire()
    order: list[int] = []

    async def call(index: int) -> None:
        await limiter.acquire()
        order.append(index)
        limiter.release()

    tasks = []
    for index in range(5):
        tasks.append(asyncio.create_task(call(index)))
        await asyncio.sleep(0)
    limiter.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    limiter = AdaptiveLimiter(initial=1, maximum=1)
    await limiter.acquire()
    granted: list[str] = []
    tasks = await _queue(limiter, ["a", "b"], granted)
    tasks[0].cancel()
    await asyncio.sleep(0)
    limiter.release()
    await asyncio.gather(tasks[1])
    assert granted == ["b"] and limiter.in_flight == 1
