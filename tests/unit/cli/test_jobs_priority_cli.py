"""`dspex eval --priority`: an unknown name is a usage error naming the valid ones."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

runner = CliRunner()


def test_an_unknown_priority_is_a_usage_error_naming_the_valid_ones(
    jobs_app: typer.Typer, eval_args: list[str]
) -> None:
    result = runner.invoke(jobs_app, [*eval_args, "--bootstrap", "127.0.0.1:1", "--priority", "urgent"])
    assert result.exit_code == 2, result.output
    assert "unknown priority 'urgent'" in result.output
    assert "interactive, normal, bulk" in result.output


def test_help_shows_the_priority_option(jobs_app: typer.Typer) -> None:
    result = runner.invoke(jobs_app, ["eval", "--help"])
    assert result.exit_code == 0 and "--priority" in result.output
