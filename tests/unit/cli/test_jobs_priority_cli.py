"""`dspex eval --priority`: an unknown name is a usage error naming the valid ones."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

import dspex
from dspex.cli import jobs

runner = CliRunner()


def test_an_unknown_priority_is_a_usage_error_naming_the_valid_ones(tmp_path: Path) -> None:
    app = typer.Typer()
    jobs.register(app)
    program, data = tmp_path / "qa.json", tmp_path / "dev.jsonl"
    dspex.Predict("question -> answer").save(program)
    data.write_text('{"question": "1+1?", "answer": "2"}\n', "utf-8")
    args = ["eval", str(program), str(data), "--inputs", "question", "--metric", "exact_match:answer"]
    result = runner.invoke(app, [*args, "--bootstrap", "127.0.0.1:1", "--priority", "urgent"])
    assert result.exit_code == 2, result.output
    assert "unknown priority 'urgent'" in result.output
    assert "interactive, normal, bulk" in result.output


def test_help_shows_the_priority_option() -> None:
    app = typer.Typer()
    jobs.register(app)
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0 and "--priority" in result.output
