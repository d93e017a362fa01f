"""`dspex worker ...`: help with an example, bad options as usage errors (exit 2)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

runner = CliRunner()


@pytest.mark.parametrize("kind", ["predict", "score", "aggregate"])
def test_help_shows_an_example(worker_app: typer.Typer, kind: str) -> None:
    result = runner.invoke(worker_app, ["worker", kind, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Example: dspex worker {kind}" in result.output


def test_predict_help_explains_the_security_defaults(worker_app: typer.Typer) -> None:
    result = runner.invoke(worker_app, ["worker", "predict", "--help"], terminal_width=200)
    assert "loopback" in result.output and "--allow-key-env" in result.output
    assert "--lm-cache-dir" in result.output and "--fast-groups" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--allow-api-base", "api.openai.com/v1"],
        ["--allow-module", "not a module"],
        ["--concurrency", "0"],
    ],
)
def test_bad_options_exit_2(worker_app: typer.Typer, args: list[str]) -> None:
    result = runner.invoke(worker_app, ["worker", "predict", "--bootstrap", "127.0.0.1:1", *args])
    assert result.exit_code == 2, result.output
