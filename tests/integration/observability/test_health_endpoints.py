"""/healthz and /readyz of real `dspex worker KIND` processes against a real broker.

Every kind answers both on its metrics port (what the Helm chart's probes use); a worker whose
broker goes away stays alive but stops being ready, and is ready again once the broker is back.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from dspex.dev.broker import DevBroker
from dspex.dev.stack import LocalStack, WorkerKind

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

KINDS: tuple[WorkerKind, ...] = ("aggregate", "score", "predict", "optimize")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(port: int, path: str) -> tuple[int, str]:
    """(status, body) of one probe, or (0, why) when nothing answers yet."""
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10.0)
    except httpx.TransportError as exc:
        return 0, repr(exc)
    return answer.status_code, answer.text


def wait_probe(
    stack: LocalStack, port: int, path: str, status: int, timeout: float, what: str
) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    seen = (0, "")
    while time.monotonic() < deadline:
        stack.check_running()
        seen = probe(port, path)
        if seen[0] == status:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"{what}: {path} never answered {status} in {timeout:.0f} s; last {seen}")


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[[str, str], LocalStack]]:
    stacks: list[LocalStack] = []

    def make(bootstrap: str, prefix: str) -> LocalStack:
        stack = LocalStack(bootstrap=bootstrap, prefix=prefix, work_dir=tmp_path / f"stack{len(stacks)}")
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop_all()


def start(stack: LocalStack, kinds: tuple[WorkerKind, ...]) -> dict[WorkerKind, int]:
    ports = {kind: free_port() for kind in kinds}
    for kind in kinds:
        stack.start(kind, "--metrics-port", str(ports[kind]))
    return ports


def test_every_worker_kind_is_live_and_becomes_ready(
    kafka_bootstrap: str, topic_prefix: str, stack_factory: Callable[[str, str], LocalStack]
) -> None:
    stack = stack_factory(kafka_bootstrap, topic_prefix)
    ports = start(stack, KINDS)
    for kind, port in ports.items():
        status, body = wait_probe(stack, port, "/readyz", 200, 120, kind)
        assert body == "ok: ready\n", (kind, body)
        status, body = probe(port, "/healthz")
        assert status == 200 and body.startswith("ok: event loop answered in "), (kind, body)
        # the same port still serves the metrics
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0).text
        assert "dspex_" in metrics, kind


def test_a_worker_without_its_broker_is_alive_but_not_ready(
    broker_factory: Callable[..., DevBroker],
    topic_prefix: str,
    stack_factory: Callable[[str, str], LocalStack],
) -> None:
    broker = broker_factory()
    stack = stack_factory(broker.bootstrap, topic_prefix)
    ports = start(stack, ("aggregate", "score"))
    for kind, port in ports.items():
        wait_probe(stack, port, "/readyz", 200, 120, kind)

    broker.stop()
    for kind, port in ports.items():
        status, body = wait_probe(stack, port, "/readyz", 503, 60, f"{kind} with its broker stopped")
        assert body.startswith("not ok: "), (kind, body)
        status, body = probe(port, "/healthz")
        assert status == 200, (kind, body)

    broker.start()
    for kind, port in ports.items():
        wait_probe(stack, port, "/readyz", 200, 120, f"{kind} with its broker back")
