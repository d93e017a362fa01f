"""infra/: docker-compose.yml is valid and mounts the very files the Prometheus tests check;
Grafana provisioning points at the dashboard and the datasource it uses.

Where a Docker CLI with the compose plugin exists, ``docker compose config`` validates the file;
otherwise (no network for the official JSON schema) a structural check of the Compose format does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"

SERVICE_KEYS = {
    "build", "image", "command", "entrypoint", "environment", "ports", "volumes", "depends_on",
    "hostname", "restart", "healthcheck", "deploy", "networks", "labels", "user", "working_dir",
}  # fmt: skip
TOP_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets"}
PORT = re.compile(r"^((\d{1,3}\.){3}\d{1,3}:)?(\d{1,5}:)?\d{1,5}(/(tcp|udp))?$")  # [IP:][HOST:]CONTAINER
# What the tests check, and where compose must mount it (host path relative to infra/ -> target).
CHECKED_MOUNTS = {
    "prometheus": {
        "./prometheus/prometheus.yml": "/etc/prometheus/prometheus.yml",
        "./prometheus/alerts.yml": "/etc/prometheus/alerts.yml",
    },
    "grafana": {
        "./grafana/provisioning/datasources": "/etc/grafana/provisioning/datasources",
        "./grafana/provisioning/dashboards": "/etc/grafana/provisioning/dashboards",
        "./grafana/dashboards": "/var/lib/grafana/dashboards",
    },
}


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # resolves the x-worker anchor and << merges
    assert isinstance(data, dict)
    return data


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        pairs.append((source, target))
    return pairs


def test_docker_compose_config_accepts_the_file_where_docker_compose_exists() -> None:
    docker = shutil.which("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True) if docker else None
    if docker is None or probe is None or probe.returncode != 0:
        # No compose plugin on this machine (the issue's "else a schema check"): the structural
        # checks of the compose format stand in for `docker compose config`, so nothing is skipped.
        test_compose_file_has_the_structure_of_the_compose_format()
        return
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_compose_file_has_the_structure_of_the_compose_format() -> None:
    data = compose()
    assert {k for k in data if not k.startswith("x-")} <= TOP_KEYS
    services, volumes = data["services"], data.get("volumes") or {}
    assert {"kafka", "prometheus", "grafana", "predict", "score", "aggregate"} <= set(services)
    for name, service in services.items():
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        assert "image" in service or "build" in service, name
        for port in service.get("ports", []):
            assert PORT.match(str(port)), (name, port)
        depends = service.get("depends_on") or []
        assert set(depends) <= set(services), (name, depends)
        for source, target in mounts(service):
            assert target.startswith("/"), (name, target)
            if source.startswith("."):
                assert (INFRA / source).exists(), (name, source)
            else:
                assert source in volumes, (name, source)
        if "build" in service:
            build = service["build"]
            assert (INFRA / build["context"] / build["dockerfile"]).is_file(), name


def test_kafka_runs_kraft_from_the_apache_image() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_compose_mounts_exactly_the_files_the_tests_check() -> None:
    services = compose()["services"]
    for service, expected in CHECKED_MOUNTS.items():
        bound = {source: target for source, target in mounts(services[service]) if source.startswith(".")}
        assert bound == expected, service
    # Prometheus reads the workers' targets from the volume they write them into.
    prometheus_targets = dict(mounts(services["prometheus"]))["targets"]
    assert prometheus_targets == "/etc/prometheus/targets"
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    assert config["scrape_configs"][0]["file_sd_configs"][0]["files"] == ["targets/*.json"]
    assert config["rule_files"] == ["alerts.yml"]  # next to prometheus.yml in both places
    for worker in ("predict", "score", "aggregate"):
        service = services[worker]
        written = service["environment"]["DSPEX_PROMETHEUS_TARGETS_DIR"]
        assert dict(mounts(service))["targets"] == written
        assert "--metrics-host" in service["command"] and "0.0.0.0" in service["command"]


def test_grafana_provisioning_matches_the_dashboard() -> None:
    datasources = yaml.safe_load((INFRA / "grafana/provisioning/datasources/dspex.yml").read_text())
    providers = yaml.safe_load((INFRA / "grafana/provisioning/dashboards/dspex.yml").read_text())
    dashboard = json.loads((INFRA / "grafana/dashboards/dspex.json").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert providers["providers"][0]["options"]["path"] == CHECKED_MOUNTS["grafana"]["./grafana/dashboards"]
    # Every panel and query reads the datasource variable, which resolves to the provisioned one.
    used = {p["datasource"]["uid"] for p in dashboard["panels"]}
    used |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert used == {"${datasource}"}
    variable = template_variables(dashboard)["datasource"]
    assert variable["type"] == "datasource" and variable["query"] == source["type"]
    assert variable["current"]["value"] == source["uid"] and source["isDefault"] is True
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def template_variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


# The label each query variable filters on, and the metric labels the workers put on every series.
FILTERS = {"prefix": "prefix", "worker": "worker_id", "job": "dspex_job"}
SELECTOR = re.compile(r"\b(dspex_[a-z0-9_]+|up)\{([^}]*)\}")


def test_the_dashboard_filters_every_query_by_prefix_and_worker_or_job() -> None:
    dashboard = json.loads((INFRA / "grafana/dashboards/dspex.json").read_text())
    variables = template_variables(dashboard)
    for name, label in FILTERS.items():
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"]["uid"] == "${datasource}"
        assert variable["includeAll"] and variable["allValue"] == ".*"
        assert variable["definition"] == variable["query"]["query"]
        assert variable["definition"].startswith("label_values(") and variable["definition"].endswith(
            f", {label})"
        )
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            selectors = SELECTOR.findall(target["expr"])
            assert selectors, target["expr"]
            for metric, matchers in selectors:
                assert 'prefix=~"$prefix"' in matchers, (panel["title"], metric)
                per_job = metric.startswith(("dspex_job_", "dspex_optimizer_best"))
                assert not per_job or 'dspex_job=~"$job"' in matchers, (panel["title"], metric)


def test_the_dashboard_has_optimizer_and_cost_panels() -> None:
    dashboard = json.loads((INFRA / "grafana/dashboards/dspex.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("dspex_optimizer_steps_total", "dspex_optimizer_best_score_percent"):
        assert metric in exprs
    for metric in ("dspex_lm_cost_usd_total", "dspex_job_cost_usd"):
        assert metric in exprs


def test_the_dashboard_has_agent_tool_panels() -> None:
    dashboard = json.loads((INFRA / "grafana/dashboards/dspex.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert "sum by (tool) (rate(dspex_tool_calls_total{" in exprs  # calls/s and the error ratio
    assert 'dspex_tool_calls_total{outcome!="ok", ' in exprs
    for quantile in ("0.5", "0.95"):
        assert (
            f"histogram_quantile({quantile}, sum by (tool, le) (rate(dspex_tool_duration_seconds_bucket{{"
            in exprs
        )
    assert "max by (tool) (dspex_tool_breaker_state{" in exprs


WORKERS = ("predict", "score", "aggregate", "optimize")
# What would give every replica of a service the same name (see the compose file's comment).
FIXED_NAMES = {"DSPEX_WORKER_WORKER_ID", "DSPEX_AGGREGATOR_WORKER_ID", "DSPEX_KAFKA_CLIENT_ID"}


def test_compose_workers_leave_their_names_to_each_replica() -> None:
    services = compose()["services"]
    prometheus_targets = dict(mounts(services["prometheus"]))["targets"]
    for worker in WORKERS:
        service = services[worker]
        assert service["hostname"] == worker  # shared by replicas: the id does not rest on it
        assert "--worker-id" not in service["command"], worker
        assert not FIXED_NAMES & set(service["environment"]), worker
        # ... and Prometheus reads every worker's target file from the same volume
        assert dict(mounts(service))["targets"] == service["environment"]["DSPEX_PROMETHEUS_TARGETS_DIR"]
        assert prometheus_targets.startswith("/etc/prometheus/")
