"""infra/docker-compose.yml against the Compose specification's JSON schema, and its mounts against
the very files the Prometheus and Grafana tests check.

Where a Docker CLI with the compose plugin exists, ``docker compose config`` judges the file too.
This machine has none, so the schema is the check: the Compose specification's JSON schema
(``compose/config/compose_spec.json``) as the docker-compose 1.29.2 wheel on PyPI ships it, fetched
once with pip (``pip download --no-deps``, pinned by its sha256) into a cache, and read from the
wheel; nothing of it is installed. jsonschema validates with that schema's draft (2019-09), with
format checks for the formats the schema names (ports, durations).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml
from prom_tools import ALERTS_YML, DASHBOARD_JSON, GRAFANA_PROVISIONING, INFRA, PROMETHEUS_YML

COMPOSE = INFRA / "docker-compose.yml"
SCHEMA_WHEEL = "docker_compose-1.29.2-py2.py3-none-any.whl"
SCHEMA_WHEEL_SHA256 = "8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809"
SCHEMA_MEMBER = "compose/config/compose_spec.json"
DOWNLOADS = Path(os.environ.get("DSPEX_TEST_DOWNLOADS", Path.home() / ".cache" / "dspex-tests"))
WORKERS = ("predict", "score", "aggregate", "optimize")

# Compose's own formats, as the specification describes them (jsonschema does not know them).
PORT = re.compile(r"^((\d{1,3}\.){3}\d{1,3}:)?(\d{1,5}(-\d{1,5})?:)?\d{1,5}(-\d{1,5})?(/(tcp|udp|sctp))?$")
DURATION = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms|us|ns))+$")


# ------------------------------------------------------------------------------- the schema


def schema_wheel() -> Path:
    """The docker-compose 1.29.2 wheel from PyPI (pip's ordinary download), checked by hash."""
    wheel = DOWNLOADS / SCHEMA_WHEEL
    if not wheel.exists():
        DOWNLOADS.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["docker-compose==1.29.2", "--dest", str(DOWNLOADS), "--quiet"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0 and wheel.exists(), f"pip download failed:\n{result.stderr}"
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert digest == SCHEMA_WHEEL_SHA256, f"{wheel} is not the wheel the test pins (sha256 {digest})"
    return wheel


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    with zipfile.ZipFile(schema_wheel()) as wheel:
        schema = json.loads(wheel.read(SCHEMA_MEMBER))
    # It names its draft as http://json-schema.org/draft/2019-09/schema# (not the draft's exact
    # id, so jsonschema cannot pick the validator from it): 2019-09 it is.
    assert "/draft/2019-09/" in schema["$schema"], schema["$schema"]
    cls = jsonschema.Draft201909Validator
    cls.check_schema(schema)
    formats = jsonschema.FormatChecker()
    formats.checks("ports")(lambda value: isinstance(value, int) or bool(PORT.match(str(value))))
    formats.checks("duration")(lambda value: bool(DURATION.match(str(value))))
    return cls(schema, format_checker=formats)


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # resolves the x-worker anchor and << merges
    assert isinstance(data, dict)
    return data


def errors(validator: jsonschema.protocols.Validator, document: dict[str, Any]) -> list[str]:
    found = validator.iter_errors(document)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]


def test_the_compose_file_validates_against_the_compose_schema(
    validator: jsonschema.protocols.Validator,
) -> None:
    assert errors(validator, compose()) == []
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("what", "path", "value"),
    [
        ("an unknown service key", ("services", "predict", "imagee"), "dspex:local"),
        ("a malformed port", ("services", "grafana", "ports"), ["3000:3000:3000"]),
        ("a malformed duration", ("services", "kafka", "healthcheck", "interval"), "five seconds"),
        ("an unknown top-level key", ("service",), {}),
        ("a depends_on condition that does not exist", ("services", "predict", "depends_on"),
         {"kafka": {"condition": "service_ready"}}),
    ],
)  # fmt: skip
def test_the_schema_check_rejects_a_broken_copy(
    validator: jsonschema.protocols.Validator, what: str, path: tuple[str, ...], value: Any
) -> None:
    broken = copy.deepcopy(compose())
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert errors(validator, broken), f"{what} passed the schema"


# ------------------------------------------------------------------------------- the mounts


def bind_mounts(service: dict[str, Any]) -> dict[Path, PurePosixPath]:
    """Every host FILE a service's bind mounts bring in (directories expanded) -> its container path."""
    files: dict[Path, PurePosixPath] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if not source.startswith((".", "/")):
            continue  # a named volume
        host = (COMPOSE.parent / source).resolve()
        assert host.exists(), f"{source} is mounted but does not exist"
        if host.is_file():
            files[host] = PurePosixPath(target)
        for path in sorted(host.rglob("*")) if host.is_dir() else []:
            if path.is_file():
                files[path] = PurePosixPath(target) / path.relative_to(host).as_posix()
    return files


def named_mounts(service: dict[str, Any]) -> dict[str, PurePosixPath]:
    pairs = [str(volume).split(":") for volume in service.get("volumes", [])]
    return {
        source: PurePosixPath(target) for source, target, *_ in pairs if not source.startswith((".", "/"))
    }


def files_under(directory: Path) -> set[Path]:
    return {path.resolve() for path in directory.rglob("*") if path.is_file()}


def test_prometheus_gets_exactly_the_config_and_rules_the_prometheus_tests_load() -> None:
    prometheus = compose()["services"]["prometheus"]
    mounted = bind_mounts(prometheus)
    # promtool checked both, and the test's Prometheus ran with them (prom_tools.scrape_config).
    assert (
        set(mounted) == {PROMETHEUS_YML.resolve(), ALERTS_YML.resolve()} == files_under(INFRA / "prometheus")
    )
    config_path = mounted[PROMETHEUS_YML.resolve()]
    assert f"--config.file={config_path}" in prometheus["command"]
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    # Relative paths in prometheus.yml resolve against its own directory, in the container too.
    (rules,) = config["rule_files"]
    assert config_path.parent / rules == mounted[ALERTS_YML.resolve()]
    (job,) = config["scrape_configs"]
    (discovery,) = job["file_sd_configs"]
    (glob,) = discovery["files"]
    targets = named_mounts(prometheus)["targets"]
    assert (config_path.parent / glob).parent == targets
    # ... the volume every worker writes its target file into.
    services = compose()["services"]
    for worker in WORKERS:
        written = services[worker]["environment"]["DSPEX_PROMETHEUS_TARGETS_DIR"]
        assert named_mounts(services[worker])["targets"] == PurePosixPath(written), worker
        command = services[worker]["command"]
        assert command[:2] == ["worker", worker] and "0.0.0.0" in command, worker


def test_grafana_gets_exactly_the_dashboard_and_provisioning_the_tests_check() -> None:
    services = compose()["services"]
    mounted = bind_mounts(services["grafana"])
    checked = {DASHBOARD_JSON.resolve()} | files_under(GRAFANA_PROVISIONING)
    assert set(mounted) == checked == files_under(INFRA / "grafana")
    for path in files_under(GRAFANA_PROVISIONING):
        assert mounted[path].is_relative_to("/etc/grafana/provisioning"), mounted[path]
    # The provider loads the dashboard from where it is mounted; the datasource is compose's Prometheus.
    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "dspex.yml").read_text())
    (provider,) = providers["providers"]
    assert PurePosixPath(provider["options"]["path"]) == mounted[DASHBOARD_JSON.resolve()].parent
    datasources = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "dspex.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090" and "9090:9090" in services["prometheus"]["ports"]
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    # every query reads the datasource variable, whose default is the provisioned datasource
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])} == {
        "${datasource}"
    }
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["current"]["value"] == source["uid"]
