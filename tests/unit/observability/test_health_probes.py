"""/healthz and /readyz on a worker's metrics port: answered through the event loop they judge.

A real loop runs in a thread of the test (as a worker's runs beside its HTTP server thread); the
probes are real HTTP requests to a real MetricsServer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from dspex.observability.health import Health
from dspex.observability.server import MetricsServer


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(timeout=5)
    running.close()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("dspex_probe_test_things", "Things.", registry=registry).inc()
    metrics = MetricsServer(
        kind="score", worker_id="w", targets_dir=None, registry=registry, health=Health(timeout_s=0.5)
    )
    with metrics:
        yield metrics


def get(server: MetricsServer, path: str) -> tuple[int, str]:
    answer = httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=5.0)
    return answer.status_code, answer.text


def test_before_the_loop_is_attached_it_is_alive_but_not_ready(server: MetricsServer) -> None:
    assert get(server, "/healthz") == (200, "ok: alive; the event loop has not started yet\n")
    assert get(server, "/readyz") == (503, "not ok: starting: not consuming yet\n")


def test_probes_answer_from_the_loop_and_metrics_are_still_served(
    server: MetricsServer, loop: asyncio.AbstractEventLoop
) -> None:
    reasons: list[str | None] = ["joining the group", None]
    server.health.attach(loop, ready=lambda: reasons[0])

    status, body = get(server, "/healthz")
    assert status == 200 and body.startswith("ok: event loop answered in "), body
    assert get(server, "/readyz") == (503, "not ok: joining the group\n")
    reasons.pop(0)
    assert get(server, "/readyz") == (200, "ok: ready\n")
    status, body = get(server, "/metrics")
    assert status == 200 and "dspex_probe_test_things_total 1.0" in body


def test_a_blocked_loop_fails_liveness_until_it_runs_again(
    server: MetricsServer, loop: asyncio.AbstractEventLoop
) -> None:
    server.health.attach(loop, ready=lambda: None)
    release = threading.Event()
    loop.call_soon_threadsafe(release.wait, 10.0)  # a blocking call on the loop
    try:
        started = time.monotonic()
        status, body = get(server, "/healthz")
        assert (status, body) == (503, "not ok: the event loop did not answer within 0.5 s\n")
        assert time.monotonic() - started < 3.0  # the probe answers; it does not hang with the loop
        assert get(server, "/readyz")[0] == 503
    finally:
        release.set()
    assert get(server, "/healthz")[0] == 200


def test_a_failing_check_is_not_ready_and_says_why(
    server: MetricsServer, loop: asyncio.AbstractEventLoop
) -> None:
    def broken() -> str | None:
        raise RuntimeError("no group state")

    server.health.attach(loop, ready=broken)
    assert get(server, "/readyz") == (503, "not ok: the check failed: RuntimeError: no group state\n")
    assert get(server, "/healthz")[0] == 200


def test_a_closed_loop_is_not_alive(server: MetricsServer) -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    server.health.attach(closed, ready=lambda: None)
    assert get(server, "/healthz") == (503, "not ok: the event loop is closed\n")
