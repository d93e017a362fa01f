"""`dspex demo`, run as the real command (what `make demo` runs): it starts a dev broker, the simulated
LM (a simulation, not a model) and the workers, evaluates through Kafka, prints the score table,
where each worker's /metrics is and how to add a predictor, then stops everything it started."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dspex.dev._system import free_port
from dspex.dev.broker import default_data_dir

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(480)]

EXAMPLES = 60
# A row of the score table: score | examples | errors | tokens | ... (rich draws │, or | without UTF-8)
_SEP = r"\s*[│|]\s*"
_ROW = re.compile(
    _SEP.join(["", r"(?P<score>\d+\.\d)", r"(?P<examples>\d+)", r"(?P<errors>\d+)", r"(?P<tokens>\d+)"])
)


def test_the_demo_evaluates_through_kafka_and_stops_what_it_started() -> None:
    port, prefix = free_port(), f"demo-test-{uuid.uuid4().hex[:8]}."
    data_dir = default_data_dir(port)
    command = [sys.executable, "-m", "dspex.cli", "demo", "--port", str(port), "--prefix", prefix,
               "--examples", str(EXAMPLES), "--predictors", "1", "--latency", "0.01"]  # fmt: skip
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "160"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=420, check=False, env=env)
        left_running = _processes_naming(prefix) + _processes_naming(str(data_dir))
    finally:
        _kill(_processes_naming(prefix) + _processes_naming(str(data_dir)))
        shutil.rmtree(data_dir, ignore_errors=True)
    assert done.returncode == 0, f"dspex demo exited {done.returncode}:\n{done.stderr[-4000:]}"

    row = _ROW.search(done.stdout)
    assert "demo evaluation (through Kafka)" in done.stdout and row is not None, done.stdout
    assert (int(row["examples"]), int(row["errors"])) == (EXAMPLES, 0)
    assert int(row["tokens"]) > 0 and 0.0 < float(row["score"]) <= 100.0  # the simulated LM answered
    metrics = re.findall(r"^\s+(\S+): (http://127\.0\.0\.1:\d+/metrics)$", done.stderr, re.MULTILINE)
    assert sorted(name for name, _ in metrics) == ["aggregate-1", "predict-1", "score-1"], done.stderr
    assert f"dspex worker predict --bootstrap 127.0.0.1:{port} --prefix {prefix}" in done.stderr
    assert "stopped what the demo started\n" in done.stderr  # its own broker: not "stays"

    assert left_running == [], f"still running after the demo: {left_running}"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the demo's broker still listens"


def _processes_naming(text: str) -> list[int]:
    """Pids of processes whose command line contains ``text`` (this test's own excepted)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # ended by itself meanwhile
            os.kill(pid, 9)
