"""A dead worker's ``up`` series does not come back when another process takes its metrics port.

A real Prometheus (Debian's) watches a targets folder with a 1 s scrape. Worker A registers and
dies without removing its target file; Prometheus sees it down. Then:

1. a process that is not registered there (worker B) binds A's port: Prometheus keeps scraping
   A's address, now asking for ``?worker=A``, and B answers 404, so ``up{worker_id="A"}`` stays 0
   (before the scrape named its worker, B's 200 turned it back to 1: the flap);
2. worker C starts on that port registering in the same folder: its sweep removes A's file, so A
   leaves Prometheus's targets, and C's own target is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prom_tools import Prometheus, free_port, require_prometheus, running_prometheus, scrape_config
from prometheus_client import CollectorRegistry

from dspex.observability.server import MetricsServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def metrics_server(worker_id: str, port: int, targets: Path | None) -> MetricsServer:
    return MetricsServer(
        kind="score", worker_id=worker_id, port=port, targets_dir=targets, registry=CollectorRegistry()
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


def health(prometheus: Prometheus) -> dict[str, tuple[str, str]]:
    """worker_id -> (health, scrape URL) of every active target."""
    active = prometheus.api("targets", state="active")["activeTargets"]
    return {t["labels"]["worker_id"]: (t["health"], t["scrapeUrl"]) for t in active}


def up_values(prometheus: Prometheus, worker_id: str, start: float) -> list[float]:
    result = prometheus.query_range(f'up{{worker_id="{worker_id}"}}', start, time.time())
    return [float(value) for series in result for _, value in series["values"]]


def test_a_dead_workers_target_stays_down_when_its_port_is_taken(tmp_path: Path) -> None:
    require_prometheus()
    targets = tmp_path / "targets"
    targets.mkdir()
    port = free_port()
    with running_prometheus(scrape_config(targets, tmp_path), tmp_path) as prometheus:
        dead = metrics_server("score-a", port, targets).start()
        wait_until(lambda: health(prometheus).get("score-a", ("",))[0] == "up", "worker A up")
        assert health(prometheus)["score-a"][1].endswith("/metrics?worker=score-a")
        target_file = dead.target_file
        dead.target_file = None  # dies without a clean stop: its target file stays behind
        dead.stop()
        wait_until(lambda: health(prometheus)["score-a"][0] == "down", "worker A down")
        down_since = time.time()

        with metrics_server("score-b", port, None):  # registered elsewhere, or not at all
            # every scrape of A's address in these seconds reached B
            wait_until(lambda: len(up_values(prometheus, "score-a", down_since)) >= 5, "5 scrapes of A")
            assert health(prometheus)["score-a"][0] == "down"
        assert target_file is not None and target_file.exists()

        with metrics_server("score-c", port, targets) as taker:
            assert taker._sweeper is not None
            taker._sweeper.join(timeout=10)
            assert not target_file.exists()
            wait_until(lambda: set(health(prometheus)) == {"score-c"}, "A gone and only C listed")
            wait_until(lambda: health(prometheus)["score-c"][0] == "up", "worker C up")
        assert set(up_values(prometheus, "score-a", down_since)) == {0.0}
