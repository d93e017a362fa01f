"""The callbacks a worker installs: the LM metrics always, the user's by import path under --allow-module."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from dspex.cli import worker as worker_cli
from dspex.errors import ConfigurationError, SecurityPolicyError
from dspex.observability.callbacks import PrometheusCallback
from dspex.observability.recorder import RecordedCallback
from dspex.processors.callbacks import load_callbacks, worker_callbacks
from dspex.processors.common import WorkerOptions
from dspex.processors.security import SecurityPolicy
from dspex.streams.config import KafkaSettings

CALLBACKS_SOURCE = """
from dspex.utils import BaseCallback

class Timing(BaseCallback):
    pass

class NeedsArguments(BaseCallback):
    def __init__(self, threshold):
        self.threshold = threshold

shared = Timing()
not_a_callback = 3
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh importable module of callbacks; its name."""
    name = f"user_callbacks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(CALLBACKS_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_class_is_built_and_an_instance_is_used_as_is(module: str) -> None:
    policy = SecurityPolicy(allow_modules=[module])
    built, shared = load_callbacks([f"{module}:Timing", f"{module}:shared"], policy)
    assert isinstance(built, RecordedCallback) and type(built.callback).__name__ == "Timing"
    assert built.name == f"{module}:Timing"
    assert shared.callback is __import__(module).shared


def test_the_worker_installs_the_metrics_callback_first(module: str) -> None:
    installed = worker_callbacks([f"{module}:Timing"], SecurityPolicy(allow_modules=[module]))
    assert isinstance(installed[0], PrometheusCallback) and len(installed) == 2
    assert [type(c) for c in worker_callbacks([], SecurityPolicy())] == [PrometheusCallback]


def test_a_module_outside_the_allow_list_is_refused_before_import(module: str) -> None:
    with pytest.raises(SecurityPolicyError, match="outside the allowed modules"):
        load_callbacks([f"{module}:Timing"], SecurityPolicy(allow_modules=["somewhere_else"]))
    assert module not in sys.modules


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("not_a_callback", "not a dspex.utils.BaseCallback"),
        ("NeedsArguments", "built with no arguments"),
        ("Missing", "cannot import callback"),
    ],
)
def test_what_is_not_a_callback_says_so(module: str, attribute: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_callbacks([f"{module}:{attribute}"], SecurityPolicy(allow_modules=[module]))


@pytest.mark.parametrize("path", ["no_colon", "pkg.mod:", ":Name", "pkg mod:Name"])
def test_a_malformed_path_is_a_configuration_error(path: str) -> None:
    with pytest.raises(ConfigurationError, match="--callback needs an import path"):
        WorkerOptions(callbacks=(path,))


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()
    root.command("noop")(lambda: None)  # a second command keeps `worker` a sub-command
    worker_cli.register(root)
    return root


def test_the_cli_passes_callbacks_to_the_predictor(app: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Any] = []
    monkeypatch.setattr(worker_cli, "_settings", lambda bootstrap: KafkaSettings(bootstrap_servers=bootstrap))
    monkeypatch.setattr(worker_cli, "_serve", served.append)
    args = ["worker", "predict", "--callback", "a.b:One", "--callback", "c:Two", "--allow-module", "a"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert served[0].options.callbacks == ("a.b:One", "c:Two")


def test_a_malformed_callback_option_exits_2(app: typer.Typer) -> None:
    result = CliRunner().invoke(
        app, ["worker", "predict", "--bootstrap", "127.0.0.1:1", "--callback", "nocolon"]
    )
    assert result.exit_code == 2, result.output
