"""A submit message with ``"mode": "batch"`` (SubmitJob 1.1, docs/protocol.md) runs in batch mode.

The documented submit message, with ``mode`` set and produced as plain JSON by a producer that
knows nothing of dspex's Python code, is expanded by the intake worker into tasks that park their
LM requests; the provider-batch worker sends them to the simulated LM's Batch API (a simulation of
OpenAI's ``/v1/files`` + ``/v1/batches``) and the job completes without one online LM call. While
its batch is at the provider, ``dspex status JOB`` shows it as ``dspex batches --job JOB`` does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from e2e_pipeline import Pipeline, wait_for
from typer.testing import CliRunner

from dspex.cli import app as cli_app
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BATCH_ARGS = ("--batch-window", "0.5", "--batch-poll", "0.2")


def batch_submit(sim: SimulatedLMServer, job_id: str) -> dict[str, Any]:
    """The submit message docs/protocol.md shows, in batch mode, its LM this test's simulated LM."""
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    message: dict[str, Any] = json.loads(text.split("```json\n", 1)[1].split("\n```", 1)[0])
    message["lm"]["api_base"] = sim.base_url
    return {**message, "schema_version": "1.1", "job_id": job_id, "mode": "batch"}


def test_a_submit_in_batch_mode_runs_through_the_batch_api(
    pipeline_factory: Callable[..., Pipeline], sim_factory: Callable[..., SimulatedLMServer]
) -> None:
    sim = sim_factory(batch_delay=4.0)  # long enough at the provider for `dspex status` to see it
    pipeline = pipeline_factory()
    pipeline.start_workers(1)
    pipeline.start("intake")
    pipeline.start("provider-batch", *BATCH_ARGS)
    pipeline.wait_ready()

    message = batch_submit(sim, "submitted-in-batch-mode")
    producer = Producer(pipeline.settings.confluent())
    producer.produce(pipeline.registry.name("submit"), key=message["job_id"], value=json.dumps(message))
    assert producer.flush(30) == 0
    del producer  # closed now, not reconnecting to the broker after the test stops it

    def status_with_batches() -> str | None:
        args = ["status", message["job_id"], "--bootstrap", pipeline.bootstrap, "--prefix", pipeline.prefix]
        result = CliRunner().invoke(cli_app, args)
        assert result.exit_code == 0, result.output
        return result.output if "provider batches (openai/simulated)" in result.output else None

    shown = wait_for(status_with_batches, 60, "dspex status to show the job's batch", detail=pipeline.report)
    assert re.search(r"\d+ queued, [1-9]\d* at the provider in [1-9]\d* batches; cost so far", shown)

    final = pipeline.wait_status(message["job_id"], lambda s: s.finished, "the batch-mode job to finish")
    examples = len(message["examples"])
    assert (final.state, final.done, final.errors) == ("completed", examples, 0)
    stats = sim.control.stats()
    assert stats["by_path"].get("chat", 0) == 0 and stats["completions_ok"] == 0  # nothing online
    assert stats["batch"]["requests_ok"] == examples and stats["batch"].get("repeated", 0) == 0
