"""`dspex optimize` refuses bad input before it reaches a broker."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dspex.cli import app
from dspex.cli.optimize import parse_knobs
from dspex.modules import Predict

runner = CliRunner()


def test_knobs_are_read_as_json_when_they_parse() -> None:
    assert parse_knobs(
        ["num_candidate_programs=8", "stop_at_score=90.5", "metric_threshold=true", "x=abc"]
    ) == {
        "num_candidate_programs": 8,
        "stop_at_score": 90.5,
        "metric_threshold": True,
        "x": "abc",
    }


def test_a_knob_without_a_value_is_bad_usage() -> None:
    with pytest.raises(typer.BadParameter, match="NAME=VALUE"):
        parse_knobs(["num_candidate_programs"])


def test_a_bad_training_line_names_the_file_and_line(tmp_path: Path) -> None:
    program = tmp_path / "program.json"
    Predict("question -> answer").save(program)
    train = tmp_path / "train.jsonl"
    train.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n{"answer": "3"}\n')
    result = runner.invoke(
        app,
        ["optimize", str(program), str(train), "--inputs", "question", "--metric", "exact_match:answer",
         "--bootstrap", "127.0.0.1:9"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"{train}:2: no input field 'question'" in result.output


def test_an_unknown_metric_is_refused(tmp_path: Path) -> None:
    program = tmp_path / "program.json"
    Predict("question -> answer").save(program)
    train = tmp_path / "train.jsonl"
    train.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n')
    result = runner.invoke(
        app,
        ["optimize", str(program), str(train), "--inputs", "question", "--metric", "no_such_metric:answer",
         "--bootstrap", "127.0.0.1:9"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "no_such_metric" in result.output
