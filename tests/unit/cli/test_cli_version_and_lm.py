"""`dspex --version`, `--name` on optimize, and programs without an LM refused before submitting."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import dspex
from dspex.cli import app, installed_version

runner = CliRunner()
DEAD = "127.0.0.1:1"


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"dspex {installed_version()}"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "dev.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n', "utf-8")
    return path


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = dspex.Predict("question -> draft")
        self.answer = dspex.Predict("question, draft -> answer")

    def forward(self, question: str) -> dspex.Prediction:
        return self.answer(question=question, draft=self.draft(question=question).draft)


def _program(tmp_path: Path, *, with_lm: bool) -> Path:
    program = TwoSteps()
    if with_lm:
        program.draft.lm = dspex.LM("openai/draft-model")
    path = tmp_path / "two.json"
    program.save(path)
    return path


@pytest.mark.parametrize("command", ["eval", "optimize"])
def test_predictors_without_an_lm_are_refused_before_connecting(
    command: str, tmp_path: Path, data: Path
) -> None:
    program = _program(tmp_path, with_lm=True)  # one of two has an LM: the other still has none
    args = [command, str(program), str(data), "--inputs", "question", "--metric", "exact_match:answer"]
    result = runner.invoke(app, [*args, "--bootstrap", DEAD])
    assert result.exit_code == 1
    assert "no LM for predictors answer: pass --lm" in result.stderr
    assert "no Kafka broker" not in result.stderr  # refused before connecting: nothing was submitted


@pytest.mark.parametrize("command", ["eval", "optimize"])
def test_with_lm_the_same_program_goes_on_to_the_broker(command: str, tmp_path: Path, data: Path) -> None:
    program = _program(tmp_path, with_lm=False)
    args = [command, str(program), str(data), "--inputs", "question", "--metric", "exact_match:answer"]
    result = runner.invoke(app, [*args, "--lm", "openai/test-model", "--name", "mine", "--bootstrap", DEAD])
    assert result.exit_code == 1
    assert f"no Kafka broker answered at {DEAD}" in result.stderr


def test_optimize_help_shows_name() -> None:
    result = runner.invoke(app, ["optimize", "--help"])
    assert result.exit_code == 0 and "--name" in result.output
