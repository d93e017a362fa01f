"""Target files Prometheus can read (0644), scrapes that name the worker they expect, and the sweep
that removes the target files of workers that are gone (see dspex.observability.server)."""

from __future__ import annotations

import json
import socket
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dspex.observability.server import WORKER_HEADER, MetricsServer, advertised_host, sweep_stale_targets


def server(worker_id: str, targets: Path | None, **kwargs: object) -> MetricsServer:
    return MetricsServer(
        kind="score", worker_id=worker_id, targets_dir=targets, registry=CollectorRegistry(), **kwargs
    )  # type: ignore[arg-type]


def write_target(directory: Path, worker_id: str, address: str) -> Path:
    path = directory / f"{worker_id}.json"
    path.write_text(json.dumps([{"targets": [address], "labels": {"kind": "score", "worker_id": worker_id}}]))
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_target_file_is_readable_by_everyone_and_carries_the_extra_labels(tmp_path: Path) -> None:
    with server("score-a", tmp_path, labels={"prefix": "run1."}) as running:
        assert running.target_file is not None
        mode = stat.S_IMODE(running.target_file.stat().st_mode)
        (entry,) = json.loads(running.target_file.read_text())
    assert mode == 0o644
    assert entry["labels"] == {
        "prefix": "run1.",
        "kind": "score",
        "worker_id": "score-a",
        "__param_worker": "score-a",
    }


def test_a_scrape_for_another_worker_is_refused_and_every_answer_names_the_worker() -> None:
    with server("score-new", None) as running:
        with urllib.request.urlopen(running.url + "?worker=score-new", timeout=5) as answer:
            assert answer.status == 200 and answer.headers[WORKER_HEADER] == "score-new"
        with urllib.request.urlopen(running.url, timeout=5) as answer:  # no worker named: served
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(running.url + "?worker=score-dead", timeout=5)
    assert refused.value.code == 404 and refused.value.headers[WORKER_HEADER] == "score-new"
    assert "score-new, not score-dead" in refused.value.read().decode()


def test_a_worker_taking_a_dead_workers_port_removes_its_target_file(tmp_path: Path) -> None:
    port = closed_port()
    dead = write_target(tmp_path, "score-dead", f"127.0.0.1:{port}")
    with server("score-new", tmp_path, port=port) as running:
        assert running._sweeper is not None
        running._sweeper.join(timeout=10)
        assert not dead.exists()
        assert running.target_file is not None and running.target_file.exists()


def test_the_sweep_keeps_live_workers_and_targets_it_cannot_judge(tmp_path: Path) -> None:
    refused = write_target(tmp_path, "score-gone", f"127.0.0.1:{closed_port()}")
    remote = write_target(tmp_path, "score-elsewhere", "no-such-host.invalid:9400")
    not_ours = tmp_path / "hand-written.json"
    not_ours.write_text('[{"targets": ["127.0.0.1:1"]}]')
    with server("score-live", tmp_path) as live:
        assert live._sweeper is not None
        live._sweeper.join(timeout=10)
        removed = sweep_stale_targets(tmp_path)
        assert live.target_file is not None and live.target_file.exists()
    assert not refused.exists()  # a loopback address nobody listens on
    assert remote.exists() and not_ours.exists() and removed == []


@pytest.mark.parametrize(
    ("resolved", "advertised"),
    [("172.18.0.5", "172.18.0.5"), ("127.0.1.1", "score"), (OSError("no such name"), "score")],
)
def test_a_wildcard_bind_advertises_the_replicas_own_address(
    monkeypatch: pytest.MonkeyPatch, resolved: str | OSError, advertised: str
) -> None:
    def gethostbyname(name: str) -> str:
        assert name == "score"
        if isinstance(resolved, OSError):
            raise resolved
        return resolved

    monkeypatch.setattr(socket, "gethostname", lambda: "score")
    monkeypatch.setattr(socket, "gethostbyname", gethostbyname)
    assert advertised_host() == advertised
    wildcard = MetricsServer(kind="score", worker_id="w", host="0.0.0.0", port=9400)
    assert wildcard._target() == f"{advertised}:9400"
