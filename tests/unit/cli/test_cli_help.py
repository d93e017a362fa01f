"""CLI conventions every command follows: help with an example, exit 2 on bad usage."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dspex.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["dev"],
        ["dev", "broker"],
        ["dev", "broker", "start"],
        ["dev", "broker", "stop"],
        ["dev", "broker", "status"],
        ["dev", "broker", "fetch"],
        ["dev", "ping"],
    ],
    ids=lambda command: " ".join(["dspex", *command]),
)
def test_help_exits_0_and_shows_an_example(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: dspex" in result.output


def test_bad_usage_exits_2() -> None:
    result = runner.invoke(app, ["dev", "broker", "start", "--port", "not-a-port"])
    assert result.exit_code == 2


def test_bootstrap_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    result = runner.invoke(app, ["dev", "ping"])
    assert result.exit_code == 1
    assert "no Kafka broker answered at 127.0.0.1:1" in result.stderr
