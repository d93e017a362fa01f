"""The simulated LM's admin listener: /admin answered on a port and thread of its own, while the
simulation's state is only ever touched on the LM's loop."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from dspex.testing._admin import AdminListener
from dspex.testing._server import SimulatedLM


@pytest.fixture
def lm_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def _sim_on(loop: asyncio.AbstractEventLoop) -> SimulatedLM:
    async def make() -> SimulatedLM:
        return SimulatedLM()  # its asyncio.Event belongs to the LM's loop

    return asyncio.run_coroutine_threadsafe(make(), loop).result(timeout=10)


def test_admin_answers_while_the_lm_listener_accepts_nothing(lm_loop: asyncio.AbstractEventLoop) -> None:
    # An LM port whose accept queue nobody drains: what a burst of connections on a loaded machine
    # looked like (connections queued for > 20 s); the admin port does not share that queue.
    stuck = socket.create_server(("127.0.0.1", 0), backlog=8)
    queued = [socket.create_connection(stuck.getsockname()[:2]) for _ in range(8)]
    sim = _sim_on(lm_loop)
    listener = AdminListener(sim, lm_loop)
    port = listener.start("127.0.0.1")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as admin:
            sim.completions_ok = 7
            assert admin.get("/admin/stats").json()["completions_ok"] == 7
            assert admin.post("/admin/hold", json={"after": 2}).json()["holding"] is True
            assert admin.post("/admin/config", json={"latency": 0.25}).json()["latency"] == 0.25
            assert admin.get("/admin/requests", params={"limit": "x"}).status_code == 400
            assert admin.post("/admin/down", json={"mode": "sideways"}).status_code == 400
            assert admin.post("/admin/release").json()["holding"] is False
        assert sim.config.latency == 0.25
    finally:
        listener.stop()
        for connection in queued:
            connection.close()
        stuck.close()


def test_admin_actions_run_on_the_lm_loop(lm_loop: asyncio.AbstractEventLoop) -> None:
    sim = _sim_on(lm_loop)
    seen: list[threading.Thread] = []
    hold = sim.hold

    def recording_hold(after: int = 0) -> None:
        seen.append(threading.current_thread())
        hold(after)

    sim.hold = recording_hold  # type: ignore[method-assign]
    lm_thread = asyncio.run_coroutine_threadsafe(_current_thread(), lm_loop).result(timeout=10)
    listener = AdminListener(sim, lm_loop)
    port = listener.start("127.0.0.1")
    try:
        response = httpx.post(f"http://127.0.0.1:{port}/admin/hold", json={}, timeout=5.0)
        assert response.status_code == 200
    finally:
        listener.stop()
    assert seen == [lm_thread]  # not the listener's own thread: the state has one owner


async def _current_thread() -> threading.Thread:
    return threading.current_thread()
