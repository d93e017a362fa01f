"""A worker's /metrics server: a port from a range, a clear error for a taken one, and the
Prometheus file-discovery target written on start and removed on stop."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from dspex.errors import ConfigurationError
from dspex.observability.server import MetricsServer


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_serves_the_registry_and_registers_the_target(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Counter("dspex_test_things", "Things.", registry=registry).inc(3)
    server = MetricsServer(kind="score", worker_id="score/host:1", targets_dir=tmp_path, registry=registry)
    with server:
        with urllib.request.urlopen(server.url, timeout=5) as answer:
            body = answer.read().decode()
        entry = json.loads(server.target_file.read_text())  # type: ignore[union-attr]
        path = server.target_file
    assert "dspex_test_things_total 3.0" in body
    assert server.url.startswith("http://127.0.0.1:")
    labels = {"kind": "score", "worker_id": "score/host:1", "__param_worker": "score/host:1"}
    assert entry == [{"targets": [f"127.0.0.1:{server.port}"], "labels": labels}]
    assert path is not None and path.name == "score_host_1.json" and not path.exists()


def test_a_taken_port_in_the_range_is_skipped(taken_port: int, tmp_path: Path) -> None:
    span = range(taken_port, taken_port + 20)
    with MetricsServer(kind="predict", worker_id="w", port_range=span, targets_dir=None) as server:
        assert server.port != taken_port and server.port in span


def test_a_taken_explicit_port_is_a_configuration_error(taken_port: int) -> None:
    with pytest.raises(ConfigurationError, match=f"metrics port {taken_port} .* already in use"):
        MetricsServer(kind="predict", worker_id="w", port=taken_port, targets_dir=None).start()
