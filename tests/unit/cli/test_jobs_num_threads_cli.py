"""`dspex eval --num-threads`: the job's in-flight budget; below 1 is a usage error."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

runner = CliRunner()


def test_a_budget_below_one_is_a_usage_error(jobs_app: typer.Typer, eval_args: list[str]) -> None:
    result = runner.invoke(jobs_app, [*eval_args, "--bootstrap", "127.0.0.1:1", "--num-threads", "0"])
    assert result.exit_code == 2, result.output
    assert "--num-threads" in result.output


def test_help_shows_the_num_threads_option(jobs_app: typer.Typer) -> None:
    result = runner.invoke(jobs_app, ["eval", "--help"])
    assert result.exit_code == 0 and "--num-threads" in result.output
