"""MLflow's client, as dspex uses it: imported only when MLflow logging is turned on, each request
bounded by the settings' timeout and never retried, so an unreachable server fails the start-up
check at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from dspex.errors import ConfigurationError
from dspex.tracking import MlflowSettings
from dspex.tracking.logger import MlflowLogger


def test_importing_dspex_and_its_tracking_leaves_mlflow_unimported() -> None:
    code = (
        "import sys, dspex, dspex.tracking, dspex.cli.optimize; dspex.MlflowSettings; "
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'mlflow'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_client_bounds_each_request_by_the_timeout_never_retries_and_prints_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # recorded first, so the test leaves the process's environment as it found it
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "false")
    logger = MlflowLogger(MlflowSettings(tracking_uri="http://127.0.0.1:9", timeout_s=2.5))
    try:
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"  # MLflow takes whole seconds
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
        assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"  # stdout is the user's
    finally:
        logger.close(0)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_server_fails_the_check_at_once_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "false")
    uri = f"http://127.0.0.1:{_closed_port()}"
    logger = MlflowLogger(MlflowSettings(tracking_uri=uri, timeout_s=5))
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigurationError) as raised:
            logger.check()
    finally:
        logger.close(0)
    # MLflow's own default (7 retries, backoff from 2 s doubling) would take minutes
    assert time.perf_counter() - started < 5
    message = str(raised.value)
    assert uri in message and "\n" not in message
