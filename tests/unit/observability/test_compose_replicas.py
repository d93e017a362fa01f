"""Three replicas of a compose worker service get three worker ids, three Kafka client ids and
three target files Prometheus (another user) can read.

There is no Docker engine here, so each replica is what a container would make of it: a process
in PID, UTS and network namespaces of its own (``unshare``), so it is pid 1, has the service's
fixed hostname and binds the service's fixed metrics port on 0.0.0.0. It runs the compose
service's command line through the real ``dspex`` CLI with the service's environment; only the
last step differs: instead of consuming (it has no network to reach Kafka), the worker starts its
metrics server, which writes its target file, and reports who it is. The shared ``targets``
volume is a temporary directory here (DSPEX_PROMETHEUS_TARGETS_DIR points at it).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "infra" / "docker-compose.yml"
REPLICAS = 3
SERVICE = "score"

# Runs in each namespace: the CLI parses the compose command; the worker it builds starts its
# /metrics server (target file included), prints who it is, and stops when stdin closes.
REPLICA = """
import asyncio, json, os, socket, sys
import dspex.cli.worker as cli
from dspex.cli import app
from dspex.streams.config import KafkaSettings

def settings(bootstrap):
    return KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap)  # no broker probe

def serve(worker):
    async def main():
        server = worker._metrics_server().start()
        print(json.dumps({"pid": os.getpid(), "hostname": socket.gethostname(),
                          "worker_id": worker.worker_id, "client_id": worker.settings.client_id,
                          "target_file": str(server.target_file), "url": server.url}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.stop()
    asyncio.run(main())

cli._settings, cli._serve = settings, serve
app(json.loads(sys.argv[1]), standalone_mode=False)
"""


def unshare_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = [unshare, "--fork", "--pid", "--uts", "--net", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


pytestmark = pytest.mark.skipif(
    not unshare_works(), reason="needs unshare(1) and the right to make namespaces (root)"
)


def compose_service(name: str) -> dict[str, Any]:
    service = yaml.safe_load(COMPOSE.read_text())["services"][name]  # x-worker merged in
    assert isinstance(service, dict)
    return service


def start_replica(service: dict[str, Any], targets: Path) -> subprocess.Popen[str]:
    env = {key: str(value) for key, value in service["environment"].items()}
    env["DSPEX_PROMETHEUS_TARGETS_DIR"] = str(targets)  # the shared volume
    env.update(PATH=os.environ["PATH"], HOME=os.environ.get("HOME", "/root"), PYTHONPATH=str(REPO))
    # `hostname NAME` inside the new UTS namespace, then exec: python is the namespace's pid 1.
    script = 'hostname "$0" && exec "$@"'
    command = ["unshare", "--fork", "--pid", "--uts", "--net", "sh", "-c", script, service["hostname"]]
    command += [sys.executable, "-c", REPLICA, json.dumps(service["command"])]
    return subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_three_replicas_of_a_service_have_three_ids_and_three_readable_target_files(tmp_path: Path) -> None:
    service = compose_service(SERVICE)
    targets = tmp_path / "targets"
    replicas = [start_replica(service, targets) for _ in range(REPLICAS)]
    try:
        reports = []
        for replica in replicas:
            assert replica.stdout is not None
            line = replica.stdout.readline()
            assert line, replica.stderr.read() if replica.stderr else "no output"
            reports.append(json.loads(line))
        files = sorted(targets.glob("*.json"))
        modes = [stat.S_IMODE(path.stat().st_mode) for path in files]
        entries = [json.loads(path.read_text()) for path in files]
    finally:
        for replica in replicas:
            replica.communicate(input="", timeout=30)
    # what made the ids collide before: the same hostname and pid 1 in every replica
    assert {(r["pid"], r["hostname"]) for r in reports} == {(1, service["hostname"])}
    ids = {r["worker_id"] for r in reports}
    assert len(ids) == REPLICAS and all(i.startswith(f"{SERVICE}-{SERVICE}-1-") for i in ids)
    assert {r["client_id"] for r in reports} == {f"dspex-{i}" for i in ids}
    assert {r["url"] for r in reports} == {f"http://{SERVICE}:9400/metrics"}  # compose's fixed port
    assert len(files) == REPLICAS and {Path(r["target_file"]) for r in reports} == set(files)
    assert all(mode & stat.S_IROTH for mode in modes), [oct(m) for m in modes]
    assert {entry[0]["labels"]["worker_id"] for entry in entries} == ids
    assert {entry[0]["labels"]["prefix"] for entry in entries} == {"dspex."}
    assert all(not replica.returncode for replica in replicas)
    assert list(targets.glob("*.json")) == []  # each removed its file on a clean stop
