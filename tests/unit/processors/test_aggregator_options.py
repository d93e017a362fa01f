"""The aggregator's options: one frozen settings object behind the CLI, ``python -m`` and env."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from dspex.errors import ConfigurationError
from dspex.observability.server import DEFAULT_TARGETS_DIR
from dspex.processors.aggregator_options import ENV_PREFIX, AggregatorOptions, options_parser, parse_options

PROG = "python -m dspex.processors.aggregator"


@pytest.fixture(autouse=True)
def _no_aggregator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) or name in ("DSPEX_FAST_GROUPS", "DSPEX_PROMETHEUS_TARGETS_DIR"):
            monkeypatch.delenv(name)


def test_a_command_line_becomes_typed_options() -> None:
    bootstrap, options = parse_options(
        ["--bootstrap", "k:9092", "--data-dir", "/tmp/agg", "--fast-groups", "--no-metrics",
         "--commit-interval", "600", "--commit-every", "300", "--worker-id", "agg0",
         "--prometheus-targets-dir", "/tmp/targets"],
        PROG,
    )  # fmt: skip
    assert bootstrap == "k:9092"
    assert options == AggregatorOptions(
        data_dir=Path("/tmp/agg"),
        fast_groups=True,
        metrics=False,
        commit_interval=600.0,
        commit_every=300,
        worker_id="agg0",
        targets_dir=Path("/tmp/targets"),
    )


def test_flags_not_given_keep_the_defaults() -> None:
    bootstrap, options = parse_options(["--data-dir", "/tmp/agg"], PROG)
    assert bootstrap is None
    assert (options.prefix, options.status_interval, options.metrics) == ("dspex.", 1.0, True)
    assert options.fast_groups is False and options.targets_dir == DEFAULT_TARGETS_DIR


def test_options_are_frozen() -> None:
    options = AggregatorOptions(data_dir=Path("/tmp/agg"))
    with pytest.raises(pydantic.ValidationError):
        options.commit_every = 5  # type: ignore[misc]


def test_the_environment_fills_what_the_command_line_does_not_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DSPEX_AGGREGATOR_COMMIT_EVERY", "250")
    monkeypatch.setenv("DSPEX_AGGREGATOR_STATUS_INTERVAL", "0.5")
    _, options = parse_options(["--data-dir", "/tmp/agg", "--status-interval", "2"], PROG)
    assert (options.commit_every, options.status_interval) == (250, 2.0)


def test_a_bad_flag_value_is_one_line_naming_the_field_and_type(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_options(["--data-dir", "/tmp/agg", "--commit-every", "lots"], PROG)
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "AggregatorOptions.commit_every: Input should be a valid integer" in last
    assert "'lots'" in last


def test_a_bad_variable_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_AGGREGATOR_WEB_PORT", "99999")
    with pytest.raises(ConfigurationError, match=r"^DSPEX_AGGREGATOR_WEB_PORT: Input should be less"):
        AggregatorOptions(data_dir=Path("/tmp/agg"))


def test_every_option_is_one_flag_helped_by_its_field() -> None:
    actions = {action.dest: action for action in options_parser(PROG)._actions}
    assert set(actions) == {"help", "bootstrap", *AggregatorOptions.model_fields}
    for name, field in AggregatorOptions.model_fields.items():
        assert actions[name].help == field.description, name
    assert actions["metrics"].option_strings == ["--metrics", "--no-metrics"]
    assert actions["targets_dir"].option_strings == ["--prometheus-targets-dir"]


def test_an_options_own_variable_is_read_as_a_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DSPEX_FAST_GROUPS", "true")
    monkeypatch.setenv("DSPEX_PROMETHEUS_TARGETS_DIR", str(tmp_path))
    _, options = parse_options(["--no-fast-groups"], PROG)
    assert options.fast_groups is False and options.targets_dir == tmp_path  # the flag wins


def test_the_state_folder_defaults_to_one_per_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_AGGREGATOR_PREFIX", "env.")
    first, second = AggregatorOptions(prefix="a."), AggregatorOptions()
    assert first.data_dir.name == "a." and second.data_dir.name == "env."
    assert first.data_dir.parent == second.data_dir.parent
