"""`dspex eval | status | results | cancel` without a broker: usage, help, and bad input refused
before any connection is made (the bootstrap address is dead, so reaching Kafka would say so)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

import dspex
from dspex.cli import jobs

runner = CliRunner()
DEAD = "127.0.0.1:1"


@pytest.fixture
def app() -> typer.Typer:
    made = typer.Typer()
    jobs.register(made)
    return made


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "qa.json"
    dspex.Predict("question -> answer").save(path)
    return path


def _eval(app: typer.Typer, program: Path, data: Path, *more: str) -> Result:
    args = ["eval", str(program), str(data), "--inputs", "question", "--metric", "exact_match:answer"]
    return runner.invoke(app, [*args, "--bootstrap", DEAD, *more])


@pytest.mark.parametrize("command", ["eval", "status", "results", "cancel"])
def test_help_shows_an_example(app: typer.Typer, command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: dspex" in result.output


def test_a_line_that_is_not_json_is_named_by_file_and_line(
    app: typer.Typer, program: Path, tmp_path: Path
) -> None:
    data = tmp_path / "dev.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n\n{"question": "2+2?", "answer": \n', "utf-8")
    result = _eval(app, program, data)
    assert result.exit_code == 1
    assert f"{data}:3: not JSON" in result.stderr
    assert "no Kafka broker" not in result.stderr  # refused before connecting: nothing was submitted


def test_a_line_without_an_input_field_is_named_by_file_and_line(
    app: typer.Typer, program: Path, tmp_path: Path
) -> None:
    data = tmp_path / "dev.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"prompt": "2+2?", "answer": "4"}\n', "utf-8")
    result = _eval(app, program, data)
    assert result.exit_code == 1
    assert f"{data}:2: no input field 'question' (it has: prompt, answer)" in result.stderr


def test_an_unknown_metric_is_refused_before_connecting(
    app: typer.Typer, program: Path, tmp_path: Path
) -> None:
    data = tmp_path / "dev.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n', "utf-8")
    args = ["eval", str(program), str(data), "--inputs", "question", "--metric", "nope:answer"]
    result = runner.invoke(app, [*args, "--bootstrap", DEAD])
    assert result.exit_code == 1
    assert "unknown metric 'nope:answer'" in result.stderr


def test_a_valid_submission_reaches_for_the_broker(app: typer.Typer, program: Path, tmp_path: Path) -> None:
    data = tmp_path / "dev.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n', "utf-8")
    result = _eval(app, program, data, "--lm", "openai/test-model")
    assert result.exit_code == 1
    assert f"no Kafka broker answered at {DEAD}" in result.stderr


def test_missing_inputs_option_is_bad_usage(app: typer.Typer, program: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["eval", str(program), str(tmp_path / "x.jsonl"), "--metric", "exact_match:a"]
    )
    assert result.exit_code == 2


def test_results_rejects_an_unknown_format(app: typer.Typer) -> None:
    assert runner.invoke(app, ["results", "JOB", "--format", "xml"]).exit_code == 2


def test_read_dataset_marks_the_inputs(tmp_path: Path) -> None:
    data = tmp_path / "dev.jsonl"
    data.write_text('{"question": "1+1?", "context": "c", "answer": "2"}\n', "utf-8")
    [example] = jobs.read_dataset(data, ["question", "context"])
    assert example.input_keys == frozenset({"question", "context"})
    assert example.labels().to_dict() == {"answer": "2"}
