"""`dspex worker ...` options: one WorkerSettings, from the command line, DSPEX_WORKER_* or defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from dspex.cli import worker as worker_cli
from dspex.cli._worker_options import WorkerSettings
from dspex.errors import ConfigurationError
from dspex.lm.pricing import ModelPrice
from dspex.processors.aggregator_options import AggregatorOptions
from dspex.streams.config import KafkaSettings

runner = CliRunner()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The workers the commands would run (nothing connects)."""
    workers: list[Any] = []
    monkeypatch.setattr(worker_cli, "_settings", lambda bootstrap: KafkaSettings(bootstrap_servers=bootstrap))
    monkeypatch.setattr(worker_cli, "_serve", workers.append)
    for name in ("DSPEX_FAST_GROUPS", "DSPEX_PROMETHEUS_TARGETS_DIR"):
        monkeypatch.delenv(name, raising=False)
    return workers


def _root() -> typer.Typer:
    root = typer.Typer()
    root.command("noop")(lambda: None)  # a second command keeps `worker` a sub-command
    worker_cli.register(root)
    return root


def _invoke(*args: str) -> Any:
    return runner.invoke(_root(), ["worker", *args], env={"COLUMNS": "250"})


def test_a_variable_fills_an_option_the_command_line_does_not_give(
    served: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPEX_WORKER_CONCURRENCY", "64")
    monkeypatch.setenv("DSPEX_WORKER_ALLOW_MODULE", '["mypkg"]')
    monkeypatch.setenv("DSPEX_WORKER_MAX_RPS", "2.5")
    result = _invoke("predict")
    assert result.exit_code == 0, result.output
    options = served[0].options
    assert options.concurrency == 64 and options.endpoints.max_rps == 2.5
    assert "mypkg" in options.policy.allow_modules


def test_the_command_line_wins_over_the_variable(served: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_WORKER_CONCURRENCY", "64")
    assert _invoke("score", "--concurrency", "8").exit_code == 0
    assert served[0].options.concurrency == 8


def test_each_command_keeps_its_own_default(served: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSPEX_WORKER_CONCURRENCY", raising=False)
    for kind in ("predict", "score", "optimize"):
        assert _invoke(kind).exit_code == 0
    assert [worker.options.concurrency for worker in served] == [1024, 256, 16]
    assert [worker.options.drain_timeout for worker in served] == [10.0, 10.0, 0.1]


def test_a_variable_cannot_change_what_a_command_fixes(
    served: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPEX_WORKER_DRAIN_TIMEOUT", "3")
    assert _invoke("optimize").exit_code == 0
    assert _invoke("predict").exit_code == 0
    assert [worker.options.drain_timeout for worker in served] == [0.1, 3.0]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DSPEX_WORKER_CONCURRENCY", "many", "valid integer"),
        ("DSPEX_WORKER_DRAIN_TIMEOUT", "soon", "valid number"),
        ("DSPEX_WORKER_FAST_GROUPS", "maybe", "valid boolean"),
        ("DSPEX_WORKER_METRICS_PORT", "70000", "less than or equal to 65535"),
    ],
)
def test_a_wrong_typed_variable_is_a_usage_error_naming_it(
    served: list[Any], monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = _invoke("predict")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())  # the error box wraps lines
    assert variable in text and expected in text
    assert served == []


def test_the_error_is_one_line_with_the_variable_and_the_type() -> None:
    with pytest.raises(ConfigurationError) as caught:
        WorkerSettings.from_env({"DSPEX_WORKER_CONCURRENCY": "many"}, {})
    message = str(caught.value)
    assert message.startswith("DSPEX_WORKER_CONCURRENCY: Input should be a valid integer")
    assert "\n" not in message


def test_every_setting_is_an_option_of_a_worker_command() -> None:
    helps = [_invoke(kind, "--help") for kind in ("predict", "intake", "provider-batch", "optimize")]
    assert all(result.exit_code == 0 for result in helps), [result.output for result in helps]
    for name in WorkerSettings.model_fields:
        flag = {"targets_dir": "--prometheus-targets-dir"}.get(name, "--" + name.replace("_", "-"))
        assert any(flag in result.output for result in helps), flag
    assert "--tasks-timeout" in helps[1].output and "--tasks-timeout" not in helps[0].output


@pytest.fixture
def aggregated(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The AggregatorOptions `dspex worker aggregate` would run with (nothing connects)."""
    runs: list[Any] = []
    monkeypatch.setattr(worker_cli, "_settings", lambda bootstrap: None)
    monkeypatch.setattr(worker_cli, "_configure_logging", lambda: None)
    monkeypatch.setattr(worker_cli, "run_aggregator", lambda settings, options: runs.append(options))
    for name in ("DSPEX_FAST_GROUPS", "DSPEX_PROMETHEUS_TARGETS_DIR", "DSPEX_AGGREGATOR_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    return runs


def test_aggregate_reads_its_own_variables_below_the_command_line(
    aggregated: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DSPEX_AGGREGATOR_COMMIT_EVERY", "300")
    monkeypatch.setenv("DSPEX_AGGREGATOR_WEB_PORT", "8000")
    result = _invoke("aggregate", "--web-port", "9000", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (aggregated[0].commit_every, aggregated[0].web_port) == (300, 9000)
    assert aggregated[0].data_dir == tmp_path


def test_aggregate_names_a_wrong_typed_variable(
    aggregated: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPEX_AGGREGATOR_METRICS_PORT", "nine")
    result = _invoke("aggregate", "--data-dir", "/nonexistent/agg")
    assert result.exit_code == 2  # a usage error, as a worker's DSPEX_WORKER_* variable
    text = " ".join(result.output.replace("│", " ").split())  # the error box wraps lines
    assert "DSPEX_AGGREGATOR_METRICS_PORT" in text and "valid integer" in text
    assert aggregated == []


def test_every_setting_reaches_the_worker_options(tmp_path: Path) -> None:
    settings = WorkerSettings(
        prefix="p.", concurrency=9, metrics_port=9401, metrics_host="0.0.0.0", targets_dir=tmp_path,
        allow_module=["mypkg"], allow_api_base=["http://lm.internal/v1"], allow_key_env=["KEY"],
        allow_mcp_server=["http://mcp.internal/mcp"], worker_id="w-1", lm_cache_dir=tmp_path / "c",
        fast_groups=True, drain_timeout=2.0, lm_initial_limit=7, max_rps=3.0, max_tpm=100.0,
        breaker_failures=2, breaker_open_s=0.5, callback=["mypkg.cb:One"], sandbox_pool=1,
        allow_media_fetch=True, record_lm_calls=False, inline_builtin_metrics=False, tasks_timeout=30.0,
        batch_window=0.5, batch_poll=2.0,
        batch_max_requests=10, batch_max_bytes=1000, batch_max_tries=4, batch_retry="online",
        otlp_endpoint="http://otel.internal:4318",  # process-wide: start_tracing(), not WorkerOptions
        price=["sim/m=1,2"],  # process-wide: register_prices(), not WorkerOptions
        mlflow_uri="http://mlflow.internal:5000",  # process-wide: start_mlflow(), not WorkerOptions
    )  # fmt: skip
    assert set(WorkerSettings.model_fields) <= set(settings.model_fields_set)  # none left out here
    options = settings.worker_options()
    assert (options.prefix, options.concurrency, options.worker_id) == ("p.", 9, "w-1")
    assert options.sandbox_pool == 1 and options.allow_media_fetch and options.tasks_timeout == 30.0
    assert options.record_lm_calls is False and options.inline_builtin_metrics is False
    assert (options.batch_window, options.batch_poll, options.batch_max_tries) == (0.5, 2.0, 4)
    assert (options.batch_max_requests, options.batch_max_bytes, options.batch_retry) == (10, 1000, "online")
    assert (options.metrics_port, options.metrics_host, options.targets_dir) == (9401, "0.0.0.0", tmp_path)
    assert (options.lm_cache_dir, options.fast_groups, options.drain_timeout) == (tmp_path / "c", True, 2.0)
    assert options.endpoints.initial_limit == 7 and options.endpoints.max_rps == 3.0
    assert options.endpoints.max_tpm == 100.0 and options.endpoints.breaker_failures == 2
    assert options.endpoints.breaker_open_s == 0.5 and options.callbacks == ("mypkg.cb:One",)
    policy = options.policy
    assert "mypkg" in policy.allow_modules and policy.allow_key_envs == ("KEY",)
    assert policy.allow_api_bases == ("http://lm.internal/v1",)
    assert policy.allow_mcp_servers == ("http://mcp.internal/mcp",)


def test_a_price_option_prices_the_workers_lm_calls(
    served: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[dict[str, Any]] = []
    monkeypatch.setattr("dspex.cli._worker_options.register_prices", registered.append)
    monkeypatch.setenv("DSPEX_WORKER_PRICE", '["sim/b=0.5"]')
    result = _invoke("predict", "--price", "sim/a=1.5,6", "--price", "openai/gpt-4o=3,12")
    assert result.exit_code == 0, result.output
    # the command line wins; prices given as two numbers get the default batch share
    assert registered == [{"sim/a": ModelPrice(1.5, 6.0), "openai/gpt-4o": ModelPrice(3.0, 12.0)}]
    registered.clear()
    assert _invoke("score").exit_code == 0 and registered == [{"sim/b": ModelPrice(0.5, 0.0)}]


@pytest.mark.parametrize("spec", ["sim/a", "sim/a=", "=1,2", "sim/a=one,2", "sim/a=1,-2", "sim/a=1,2,3"])
def test_a_malformed_price_is_a_usage_error_quoting_it(served: list[Any], spec: str) -> None:
    result = _invoke("predict", "--price", spec)
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert "price" in text and repr(spec.partition("=")[0] or spec).strip("'") in text
    assert served == []


def _aggregate_params() -> dict[str, Any]:
    group = typer.main.get_command(_root())
    command = group.commands["worker"].commands["aggregate"]  # type: ignore[attr-defined]
    return {param.name: param for param in command.params}


def test_every_aggregator_option_is_one_flag_helped_by_its_field() -> None:
    params = _aggregate_params()
    assert set(params) == {"bootstrap", *AggregatorOptions.model_fields}
    flags = [flag for param in params.values() for flag in (*param.opts, *param.secondary_opts)]
    assert len(flags) == len(set(flags))  # no flag spelled twice
    for name, field in AggregatorOptions.model_fields.items():
        assert params[name].help == field.description, name
    # the spellings scripts already use
    assert params["targets_dir"].opts == ["--prometheus-targets-dir"]
    assert params["metrics"].secondary_opts == ["--no-metrics"]
    assert params["dead_worker_after"].opts == ["--dead-worker-after"]


def test_aggregate_flags_reach_the_options(aggregated: list[Any], tmp_path: Path) -> None:
    result = _invoke(
        "aggregate", "--prefix", "p.", "--no-metrics", "--dead-worker-after", "4.5",
        "--prometheus-targets-dir", str(tmp_path), "--commit-every", "7", "--status-interval", "0.5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    options = aggregated[0]
    assert (options.prefix, options.metrics, options.dead_worker_after) == ("p.", False, 4.5)
    assert (options.targets_dir, options.commit_every, options.status_interval) == (tmp_path, 7, 0.5)
    assert options.data_dir.parts[-2:] == ("aggregate", "p.")  # one state folder per prefix


def test_aggregate_options_own_variables_count_as_given(
    aggregated: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DSPEX_FAST_GROUPS", "1")
    monkeypatch.setenv("DSPEX_PROMETHEUS_TARGETS_DIR", str(tmp_path))
    monkeypatch.setenv("DSPEX_AGGREGATOR_DEAD_WORKER_AFTER", "12")
    assert _invoke("aggregate").exit_code == 0
    options = aggregated[0]
    assert (options.fast_groups, options.targets_dir, options.dead_worker_after) == (True, tmp_path, 12.0)
