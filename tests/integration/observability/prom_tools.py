"""A real Prometheus for tests: its config from infra/, its HTTP API, and promtool.

The test config is infra/prometheus/prometheus.yml itself with three changes only: a 1 s scrape
and evaluation interval, the rule file and the file_sd glob made absolute (the rule file is the
one in infra/, the glob points at the test's targets directory).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
INFRA = REPO / "infra"
PROMETHEUS_YML = INFRA / "prometheus" / "prometheus.yml"
ALERTS_YML = INFRA / "prometheus" / "alerts.yml"
DASHBOARD_JSON = INFRA / "grafana" / "dashboards" / "dspex.json"
GRAFANA_PROVISIONING = INFRA / "grafana" / "provisioning"
PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")

# Grafana's global variables, as Grafana would expand them for a 1 s scrape interval.
GRAFANA_VARIABLES = {
    "$__rate_interval": "15s",
    "$__interval": "1s",
    "$__range": "5m",
    "${__rate_interval}": "15s",
    "${__interval}": "1s",
    "${__range}": "5m",
    # the dashboard's template variables at their default, "All" (their allValue)
    "$prefix": ".*",
    "$worker": ".*",
    "$job": ".*",
}


def require_prometheus() -> None:
    if not (PROMETHEUS.exists() and PROMTOOL.exists()):
        pytest.skip("Debian's prometheus package is not installed (bash infra/ci/install-system-deps.sh)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROMTOOL), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def scrape_config(targets_dir: Path, work_dir: Path) -> Path:
    """infra's prometheus.yml, scraping every second from ``targets_dir``; written in ``work_dir``."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS_YML)]
    (job,) = config["scrape_configs"]
    job["file_sd_configs"][0]["files"] = [str(targets_dir / "*.json")]
    job["file_sd_configs"][0]["refresh_interval"] = "1s"
    path = work_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel title, refId, expression) of every query of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def dashboard_variables() -> dict[str, str]:
    """name -> label_values(...) query of every query variable of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    variables = dashboard["templating"]["list"]
    return {v["name"]: v["definition"] for v in variables if v["type"] == "query"}


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS_YML.read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    left = re.findall(r"\$\{?\w+", expr)
    if left:
        raise AssertionError(f"unknown Grafana variable(s) {left} in {expr}")
    return expr


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: Any) -> Any:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = answer.json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {answer.status_code} {body}")
        return body["data"]

    def query_range(self, expr: str, start: float, end: float) -> list[Any]:
        return list(self.api("query_range", query=expr, start=start, end=end, step="1s")["result"])

    def targets_up(self) -> dict[str, str]:
        active = self.api("targets", state="active")["activeTargets"]
        return {t["labels"].get("kind", "?") + "@" + t["scrapeUrl"]: t["health"] for t in active}

    def wait_targets(self, kinds: set[str], timeout: float = 60.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.targets_up()
            up = {key.split("@")[0] for key, state in health.items() if state == "up"}
            if kinds <= up:
                return health
            time.sleep(0.5)
        raise AssertionError(f"Prometheus targets not up in {timeout}s: {self.targets_up()}")

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


@contextmanager
def running_prometheus(config: Path, work_dir: Path) -> Iterator[Prometheus]:
    port = free_port()
    log_path = work_dir / "prometheus.log"
    command = [
        str(PROMETHEUS),
        f"--config.file={config}",
        f"--storage.tsdb.path={work_dir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(prometheus)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(work_dir / "tsdb", ignore_errors=True)


def _wait_ready(prometheus: Prometheus, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if prometheus.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {prometheus.log_tail()}")
        try:
            if httpx.get(prometheus.url + "/-/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus not ready in {timeout}s: {prometheus.log_tail()}")
