"""`Client.optimize(..., mode="batch")` / `dspex optimize --batch`: the optimize job carries the
evaluation mode (OptimizeJob 1.1; a 1.0 job runs online) and the optimize worker's executor runs
the full evaluations in it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

import dspex
from dspex.cli import app
from dspex.client._optimize import OptimizeRequest, build_optimize_job
from dspex.client._submit import Policy
from dspex.errors import ConfigurationError
from dspex.processors.optimizer import executor_for
from dspex.schemas import OptimizeJob, decode, encode
from dspex.testing import arithmetic_dataset


def _job(**limits: Any) -> OptimizeJob:
    train = [row.with_inputs("question") for row in arithmetic_dataset(3, seed=4)]
    request = OptimizeRequest(
        dspex.Predict("question -> answer"), train, None, "exact_match:answer", "labeled", **limits
    )
    return build_optimize_job(request, Policy())[1]


def test_the_mode_travels_on_the_optimize_job() -> None:
    assert _job(mode="batch").evaluation_mode == "batch"
    assert _job().evaluation_mode == _job(mode="online").evaluation_mode == "online"
    with pytest.raises(ConfigurationError, match="mode must be 'online' or 'batch'"):
        _job(mode="fast")


def test_an_optimize_job_of_schema_1_0_runs_its_evaluations_online() -> None:
    wire = json.loads(encode(_job(mode="batch")))
    assert (wire["schema_version"], wire["evaluation_mode"]) == ("1.1", "batch")
    del wire["evaluation_mode"]
    older = decode(json.dumps({**wire, "schema_version": "1.0"}).encode(), OptimizeJob)
    assert older.evaluation_mode == "online"


def test_the_optimize_workers_executor_evaluates_in_the_jobs_mode() -> None:
    batch, online = _job(mode="batch"), _job()
    with dspex.Client("127.0.0.1:9") as client:  # never connected: the executor only holds it
        executor = executor_for(client, batch)
        assert (executor.evaluation_mode, executor.parent_job_id) == ("batch", batch.job_id)
        assert executor_for(client, online).evaluation_mode == "online"


def test_the_cli_offers_batch_mode() -> None:
    result = CliRunner().invoke(app, ["optimize", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--batch" in result.output and "--online" in result.output
