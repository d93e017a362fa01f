"""`dspex eval --num-threads`: the job's in-flight budget; below 1 is a usage error."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

import dspex
from dspex.cli import jobs

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    jobs.register(app)
    return app


def test_a_budget_below_one_is_a_usage_error(tmp_path: Path) -> None:
    program, data = tmp_path / "qa.json", tmp_path / "dev.jsonl"
    dspex.Predict("question -> answer").save(program)
    data.write_text('{"question": "1+1?", "answer": "2"}\n', "utf-8")
    args = ["eval", str(program), str(data), "--inputs", "question", "--metric", "exact_match:answer"]
    result = runner.invoke(_app(), [*args, "--bootstrap", "127.0.0.1:1", "--num-threads", "0"])
    assert result.exit_code == 2, result.output
    assert "--num-threads" in result.output


def test_help_shows_the_num_threads_option() -> None:
    result = runner.invoke(_app(), ["eval", "--help"])
    assert result.exit_code == 0 and "--num-threads" in result.output
