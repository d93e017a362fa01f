"""A broker that requires SASL/PLAIN: the workers (from DSPEX_KAFKA_* in their environment) and the
client (from KafkaSettings) authenticate and run a job; with a wrong password each fails within
seconds, saying that the broker refused the credentials."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from resilience_helpers import assert_exact, devset, pipeline_of, sim_lm

from dspex.client import Client
from dspex.dev import DevBroker
from dspex.errors import BrokerAuthenticationError, BrokerUnavailableError
from dspex.streams.config import KafkaSettings
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

USER, PASSWORD = "dspex", "sasl-test-password"
FAIL_FAST_S = 15.0


def _env(password: str) -> dict[str, str]:
    return {
        "DSPEX_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DSPEX_KAFKA_SASL_MECHANISM": "PLAIN",
        "DSPEX_KAFKA_SASL_USERNAME": USER,
        "DSPEX_KAFKA_SASL_PASSWORD": password,
    }


def test_workers_and_client_authenticate_with_sasl_plain(
    broker_factory: Callable[..., DevBroker], topic_prefix: str, tmp_path: Path
) -> None:
    broker = broker_factory(sasl_plain=(USER, PASSWORD))
    right = KafkaSettings.from_env(_env(PASSWORD), bootstrap_servers=broker.bootstrap)
    with (
        SimulatedLMServer(latency=0.01) as sim,
        pipeline_of(
            broker.bootstrap, topic_prefix, tmp_path / "ok", kafka=right, env=_env(PASSWORD)
        ) as pipeline,
    ):
        pipeline.start("aggregate")
        pipeline.start("score")
        pipeline.start("predict", "--allow-api-base", sim.base_url)
        pipeline.wait_ready()
        examples = devset(100, seed=81)
        job_id = pipeline.submit(examples, sim_lm(sim.base_url))
        status, _ = pipeline.finish(job_id, timeout=120)
        assert_exact(pipeline, job_id, status, len(examples))

    wrong_env = _env("not-the-password")
    started = time.monotonic()
    workers = [
        subprocess.run(
            [sys.executable, "-m", "dspex.cli", "worker", kind, "--bootstrap", broker.bootstrap,
             "--prefix", topic_prefix, *extra],
            env={**_clean_env(), **wrong_env}, capture_output=True, text=True, timeout=60, check=False,
        )
        for kind, extra in (("predict", ["--allow-api-base", "http://127.0.0.1:9/v1"]), ("aggregate", []))
    ]  # fmt: skip
    for done in workers:
        assert done.returncode == 1, done.stderr[-2000:]
        assert_says_what_to_change(done.stderr)
        assert "not-the-password" not in done.stderr + done.stdout
    wrong = KafkaSettings.from_env(wrong_env, bootstrap_servers=broker.bootstrap)
    with Client(kafka=wrong, prefix=topic_prefix) as client, pytest.raises(BrokerUnavailableError) as refused:
        client.workers()
    assert isinstance(refused.value, BrokerAuthenticationError)
    assert_says_what_to_change(str(refused.value))
    assert time.monotonic() - started < 2 * FAIL_FAST_S + 5  # two worker start-ups and the client


def assert_says_what_to_change(message: str) -> None:
    """The credentials were refused, which settings to change, and no advice to start a broker."""
    assert "refused our credentials" in message, message[-2000:]
    assert "DSPEX_KAFKA_SASL_USERNAME" in message and "DSPEX_KAFKA_SASL_PASSWORD" in message
    assert f"user {USER!r}" in message  # what we sent, so a typo shows
    assert "start one" not in message and "no Kafka broker answered" not in message


def _clean_env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if not key.startswith("DSPEX_KAFKA_")}
