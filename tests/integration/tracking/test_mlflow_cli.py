"""`--mlflow-uri` naming a server that is not there is a usage error at start-up (exit 2, the URI
named in one line) and nothing is submitted: no broker is even asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow_tools import free_port

from dspex.modules import Predict


@pytest.mark.parametrize("command", ["eval", "optimize"])
def test_an_unreachable_mlflow_uri_is_a_usage_error_before_anything_is_submitted(
    command: str, tmp_path: Path
) -> None:
    Predict("question -> answer").save(tmp_path / "program.json")
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1 + 1", "answer": "2"}\n')
    uri = f"http://127.0.0.1:{free_port()}"
    dead_broker = f"127.0.0.1:{free_port()}"
    args = [sys.executable, "-m", "dspex.cli", command, str(tmp_path / "program.json"), str(data)]
    args += ["--inputs", "question", "--metric", "exact_match:answer", "--lm", "openai/simulated"]
    args += ["--api-base", "http://127.0.0.1:9/v1", "--mlflow-uri", uri, "--bootstrap", dead_broker]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert uri in done.stderr and "--mlflow-uri" in done.stderr
    assert "broker" not in done.stderr.lower()  # refused before any Kafka connection was tried
