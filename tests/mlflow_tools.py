"""A real MLflow tracking server for the tests, and reading runs back two ways: through its REST API
(plain HTTP, so what dspex logged through MLflow's client is checked by a reader that does not share
it) and through MLflow's own ``MlflowClient`` (:func:`mlflow_client`, :func:`steps_of`), as users read it.

The server runs from its own virtual environment, installed once by ``make mlflow-server`` into
``~/.cache/dspex/mlflow`` (MLflow's version pinned there): a SQLite backend store and a local
artifact root in a temporary folder, served on a free loopback port. Without that environment the
tests that need it skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

MLFLOW_VENV = Path.home() / ".cache" / "dspex" / "mlflow"
MLFLOW_BIN = MLFLOW_VENV / "bin" / "mlflow"
STARTUP_TIMEOUT_S = 180.0
API = "/api/2.0/mlflow"


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server: its URL, and reads of what was logged to it."""

    url: str

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def experiment_id(self, name: str) -> str:
        return str(
            self.get(f"{API}/experiments/get-by-name", experiment_name=name)["experiment"]["experiment_id"]
        )

    def runs(self, experiment: str) -> list[dict[str, Any]]:
        """Every run of experiment ``experiment`` (by name), newest first."""
        body = {"experiment_ids": [self.experiment_id(experiment)], "max_results": 1000}
        response = httpx.post(f"{self.url}{API}/runs/search", json=body, timeout=30)
        response.raise_for_status()
        runs: list[dict[str, Any]] = response.json().get("runs", [])
        return runs

    def metric_history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get(
            f"{API}/metrics/get-history", run_id=run_id, metric_key=key
        ).get("metrics", [])
        return sorted(found, key=lambda point: int(point.get("step", 0)))

    def artifact_paths(self, run: dict[str, Any]) -> list[str]:
        listed = self.get(f"{API}/artifacts/list", run_id=run["info"]["run_id"]).get("files", [])
        return sorted(str(item["path"]) for item in listed)

    def artifact(self, run: dict[str, Any], path: str) -> bytes:
        """The bytes of artifact ``path`` of ``run`` (through the server's artifact proxy)."""
        uri = str(run["info"]["artifact_uri"]).removeprefix("mlflow-artifacts:").lstrip("/")
        response = httpx.get(f"{self.url}/api/2.0/mlflow-artifacts/artifacts/{uri}/{path}", timeout=30)
        response.raise_for_status()
        return response.content

    def artifact_json(self, run: dict[str, Any], path: str) -> Any:
        return json.loads(self.artifact(run, path))


def params_of(run: dict[str, Any]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in run["data"].get("params", [])}


def metrics_of(run: dict[str, Any]) -> dict[str, float]:
    return {item["key"]: float(item["value"]) for item in run["data"].get("metrics", [])}


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in run["data"].get("tags", [])}


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and no MLflow server: {reason}", pytrace=False)
    pytest.skip(f"no MLflow server: {reason}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"mlflow server not healthy after {STARTUP_TIMEOUT_S:.0f} s: {log.read_text()[-2000:]}"
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` from the cached environment, for the whole session."""
    if not MLFLOW_BIN.exists():
        _missing(f"{MLFLOW_BIN} is not installed (make mlflow-server)")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = root / "server.log"
    command = [
        str(MLFLOW_BIN), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield MlflowServer(url)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # the server's own group only (uvicorn workers in it)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def mlflow_client(server: MlflowServer) -> Any:
    """MLflow's own client (``MlflowClient``) of ``server``: the second reader of what was logged."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=server.url)


def steps_of(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    """Metric ``key`` of run ``run_id`` as (step, value), in the order of the steps, read with
    ``MlflowClient.get_metric_history``."""
    points = client.get_metric_history(run_id, key)
    return sorted((int(point.step), float(point.value)) for point in points)
