"""The options of `dspex worker ...`, declared once: :class:`WorkerSettings` and the commands built on it.

Every option a worker command shows (flag, help, bounds, default) is one field of
:class:`WorkerSettings`; :func:`worker_command` turns a list of field names into a typer command,
so `predict`, `score` and `optimize` share one definition of ``--concurrency``, ``--metrics-port``
and the rest, and differ only in which fields they take and in their defaults. The command fills a
:class:`WorkerSettings` and hands the processor the :class:`~dspex.processors.common.WorkerOptions`
it builds. Underneath, :func:`options_command` makes a command of any settings model's fields,
reading each field's flag, help and bounds through :func:`dspex._flags.field_flags`; `dspex worker
aggregate` is made that way from :class:`~dspex.processors.aggregator_options.AggregatorOptions`.

Where a value comes from, first match wins: the command line (or the option's own variable, such as
``DSPEX_FAST_GROUPS``), a ``DSPEX_WORKER_<FIELD>`` environment variable
(``DSPEX_WORKER_CONCURRENCY=64``; lists as JSON, ``DSPEX_WORKER_ALLOW_MODULE='["mypkg"]'``), the
command's default. A variable of the wrong type is a usage error naming it and the type it needs.

    >>> WorkerSettings.from_env({"DSPEX_WORKER_CONCURRENCY": "64"}, {}).concurrency
    64
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from typer.models import OptionInfo

from dspex._flags import cli, field_flags
from dspex.cli._common import DEFAULT_BOOTSTRAP, BootstrapOption, PrefixOption
from dspex.errors import ConfigurationError
from dspex.lm.pricing import parse_price, register_prices
from dspex.observability.server import DEFAULT_METRICS_HOST, DEFAULT_TARGETS_DIR
from dspex.processors.common import WorkerOptions
from dspex.processors.endpoints import EndpointOptions
from dspex.processors.security import SecurityPolicy
from dspex.processors.worker_fields import FastGroups, MetricsHost, MetricsPort, TargetsDir
from dspex.schemas.submit import DEFAULT_TASKS_TIMEOUT_S
from dspex.streams.config import env_values, settings_error

__all__ = [
    "ENV_PREFIX",
    "WorkerRunner",
    "WorkerSettings",
    "given_values",
    "options_command",
    "settings_option",
    "worker_command",
]

ENV_PREFIX = "DSPEX_WORKER_"

# What WorkerOptions takes under the same name: passed over as they are (the rest is built).
_WORKER_FIELDS = frozenset(field.name for field in dataclasses.fields(WorkerOptions))
# Options every dspex command shares, defined with the other commands' (`--prefix`).
_SHARED_OPTIONS: dict[str, Any] = {"prefix": PrefixOption}
# Where an option's value counts as given (above DSPEX_WORKER_* variables): click's ParameterSource
# names, compared by name since typer may bring its own copy of click.
_GIVEN = frozenset({"COMMANDLINE", "ENVIRONMENT"})


class WorkerSettings(BaseModel):
    """What a `dspex worker` command line says, one field per option (see the module docs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = Field(WorkerOptions.prefix)
    concurrency: int = Field(
        WorkerOptions.concurrency, ge=1, description="Messages in flight at once in this process."
    )
    metrics_port: MetricsPort = None
    metrics_host: MetricsHost = DEFAULT_METRICS_HOST
    targets_dir: TargetsDir = DEFAULT_TARGETS_DIR
    allow_module: list[str] | None = Field(
        None,
        description="Module (or package) jobs may import program classes and metrics from; repeatable. "
        "dspex's own modules are always allowed.",
    )
    allow_api_base: list[str] | None = Field(
        None,
        description="LM API base jobs may point at (the URL and paths under it); repeatable. "
        "Default: loopback API bases only (127.0.0.1, localhost, ::1, any port).",
    )
    allow_key_env: list[str] | None = Field(
        None,
        description="Environment variable whose API key jobs may use; repeatable. Default: keys are sent "
        "to loopback API bases only.",
    )
    allow_mcp_server: list[str] | None = Field(
        None,
        description="Streamable-HTTP MCP server URL (and paths under it) whose tools programs may call; "
        "repeatable. Default: none; stdio servers never.",
    )
    allow_media_fetch: bool = Field(
        False,
        description="Let programs download the image, audio and file URLs they are given "
        "(default: refused, so a job cannot make the worker fetch an address).",
    )
    record_lm_calls: bool = Field(
        True,
        description="Keep every LM call of a task (messages, completion, tokens, cost, latency; texts "
        "bounded, keys never) in its result, for the dashboard's drill-down.",
        json_schema_extra=cli("--record-lm-calls/--no-record-lm-calls"),
    )
    inline_builtin_metrics: bool = Field(
        True,
        description="Score predictions of jobs with a built-in metric (exact_match:answer) here and "
        "write their scores straight to the scores topic; with --no-inline-builtin-metrics every "
        "prediction goes to the scorer.",
        json_schema_extra=cli("--inline-builtin-metrics/--no-inline-builtin-metrics"),
    )
    tasks_timeout: float = Field(
        DEFAULT_TASKS_TIMEOUT_S,
        ge=0.001,
        description="Seconds after which an evaluation with nothing done fails as tasks_missing.",
    )
    worker_id: str | None = Field(
        None, description="Name in heartbeats and metrics (default KIND-HOST-PID-XXXXXX)."
    )
    lm_cache_dir: Path | None = Field(
        None,
        description="Turn the LM response cache on, in this directory "
        "(default: off, every task calls the LM).",
    )
    fast_groups: FastGroups = WorkerOptions.fast_groups
    drain_timeout: float = Field(
        WorkerOptions.drain_timeout,
        ge=0.1,
        description="Seconds running messages get to finish when partitions are revoked "
        "(on shutdown: at most 5).",
    )
    lm_initial_limit: int = Field(
        EndpointOptions.initial_limit,
        ge=1,
        description="Starting concurrency limit per LM endpoint "
        "(doubles per round trip until the first 429).",
    )
    max_rps: float | None = Field(
        None, ge=0.001, description="Fixed cap: LM requests/s per endpoint (default none)."
    )
    max_tpm: float | None = Field(
        None, ge=1, description="Fixed cap: LM tokens per minute per endpoint (default none)."
    )
    breaker_failures: int = Field(
        EndpointOptions.breaker_failures,
        ge=1,
        description="Consecutive connection failures or 5xx answers that open an endpoint's circuit breaker.",
    )
    breaker_open_s: float = Field(
        EndpointOptions.breaker_open_s,
        ge=0.01,
        description="Seconds an open breaker waits before a probe call.",
    )
    callback: list[str] | None = Field(
        None,
        description="A dspex callback (BaseCallback subclass or instance) by import path "
        "'pkg.mod:Name', from an --allow-module module; repeatable. It runs in every program this "
        "worker runs, and what it hears is stored in each prediction's result (callback_events).",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="Send OpenTelemetry traces of the programs this worker runs to this OTLP/HTTP "
        "receiver (base URL, e.g. http://127.0.0.1:4318); the only place this worker exports to. "
        "Sampling: OTEL_TRACES_SAMPLER(_ARG), default 1% of examples plus every failed one. Default: off.",
        json_schema_extra=cli("--otlp-endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    mlflow_uri: str | None = Field(
        None,
        description="Log each optimization this worker runs to this MLflow tracking server, its candidate "
        "evaluations as child runs (checked at start-up: one that cannot be reached is a usage error); "
        "the only server it logs to, never one a job names. Default: off.",
        json_schema_extra=cli("--mlflow-uri", "DSPEX_WORKER_MLFLOW_URI"),
    )
    price: list[str] | None = Field(
        None,
        description="The USD price of a model the built-in table lacks or prices differently: "
        "'MODEL=INPUT,OUTPUT' per 1M prompt and completion tokens (e.g. 'openai/my-model=0.4,1.6'); "
        "repeatable. Each worker charges the LM calls it makes, so give every worker the same prices.",
    )
    sandbox_pool: int = Field(
        WorkerOptions.sandbox_pool,
        ge=0,
        description="Warm code sandboxes (Deno + Pyodide) for RLM, ProgramOfThought and CodeAct programs; "
        "0 (default): this worker runs no code and such tasks fail with that reason.",
    )
    # provider-batch only: how parked LM requests are collected into provider batches
    batch_window: float = Field(
        WorkerOptions.batch_window,
        ge=0,
        description="Seconds of parked LM requests one provider batch collects.",
    )
    batch_poll: float = Field(
        WorkerOptions.batch_poll,
        ge=0.01,
        description="Seconds between looks at the provider batches in flight.",
    )
    batch_max_requests: int = Field(
        WorkerOptions.batch_max_requests,
        ge=1,
        description="Requests per provider batch at most (OpenAI: 50,000).",
    )
    batch_max_bytes: int = Field(
        WorkerOptions.batch_max_bytes,
        ge=1,
        description="Bytes per provider batch file at most (OpenAI: 200 MB).",
    )
    batch_max_tries: int = Field(
        WorkerOptions.batch_max_tries,
        ge=1,
        description="Provider batches a request may go through unanswered (expired, 5xx) "
        "before its example fails.",
    )
    batch_retry: Literal["batch", "online"] = Field(
        "batch",
        description="Where a request its provider batch did not answer (expired, 5xx) goes: a new batch "
        "(up to --batch-max-tries), or the online endpoint at once, at the online price.",
    )

    @field_validator("price")
    @classmethod
    def _prices_parse(cls, specs: list[str] | None) -> list[str] | None:
        for spec in specs or ():
            try:
                parse_price(spec)
            except ConfigurationError as exc:  # a plain ValueError: reported under the field's name
                raise ValueError(str(exc)) from None
        return specs

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise settings_error(exc, lambda field: f"WorkerSettings.{field}") from None

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        given: Mapping[str, Any],
        defaults: Mapping[str, Any] | None = None,
    ) -> WorkerSettings:
        """``given`` values, else ``DSPEX_WORKER_*`` variables in ``env``, else ``defaults``, else
        the fields' own defaults.

        A bad value is a one-line :class:`ConfigurationError` naming the variable or field.
        """
        return cls(**{**(defaults or {}), **env_values(cls, ENV_PREFIX, env), **given})

    def register_prices(self) -> None:
        """Add ``--price`` entries to this process's price table (they win over the built-in ones)."""
        if self.price:
            register_prices(dict(parse_price(spec) for spec in self.price))

    def start_tracing(self, kind: str) -> None:
        """Turn tracing on in this process when ``--otlp-endpoint`` was given (service ``dspex-KIND``
        unless ``OTEL_SERVICE_NAME`` names one)."""
        if self.otlp_endpoint is None:
            return
        from dspex.configuration import configure
        from dspex.observability.tracing import TracingSettings

        service = os.environ.get("OTEL_SERVICE_NAME") or f"dspex-{kind}"
        configure(tracing=TracingSettings(endpoint=self.otlp_endpoint, service_name=service))

    def start_mlflow(self) -> None:
        """Turn MLflow logging on in this process when ``--mlflow-uri`` was given (the server
        checked now: a ConfigurationError naming the URI when it cannot be used)."""
        if self.mlflow_uri is not None:
            from dspex.configuration import configure

            configure(mlflow=self.mlflow_uri)

    def worker_options(self, **fixed: Any) -> WorkerOptions:
        """The processor's options: the same-named fields, the security policy and LM flow control.

        ``fixed`` sets WorkerOptions fields a command does not offer as options.
        """
        try:
            policy = SecurityPolicy(
                allow_modules=self.allow_module or (),
                allow_api_bases=self.allow_api_base,
                allow_key_envs=self.allow_key_env,
                allow_mcp_servers=self.allow_mcp_server or (),
            )
            endpoints = EndpointOptions(
                initial_limit=self.lm_initial_limit,
                max_rps=self.max_rps,
                max_tpm=self.max_tpm,
                breaker_failures=self.breaker_failures,
                breaker_open_s=self.breaker_open_s,
            )
            same = {name: getattr(self, name) for name in type(self).model_fields if name in _WORKER_FIELDS}
            return WorkerOptions(
                **{**same, **fixed},
                policy=policy,
                endpoints=endpoints,
                callbacks=tuple(self.callback or ()),
            )
        except ConfigurationError as exc:
            raise typer.BadParameter(str(exc)) from exc


def settings_option(model: type[BaseModel], name: str) -> OptionInfo:
    """The typer option of ``model``'s field ``name``: its flag, help, bounds and own variable."""
    flag = field_flags(model)[name]
    option: OptionInfo = typer.Option(flag.flag, help=flag.help, envvar=flag.envvar, **flag.bounds)
    return option


def _annotation(model: type[BaseModel], name: str) -> Any:
    if name in _SHARED_OPTIONS:
        return _SHARED_OPTIONS[name]
    return Annotated[model.model_fields[name].annotation, settings_option(model, name)]


WorkerRunner = Callable[[str, WorkerOptions], None]


# What a command built by options_command runs: the bootstrap servers and the options given.
OptionsRunner = Callable[[str, dict[str, Any]], None]


def options_command(
    app: typer.Typer,
    name: str,
    model: type[BaseModel],
    fields: Sequence[str],
    *,
    epilog: str,
    defaults: Mapping[str, Any] | None = None,
) -> Callable[[OptionsRunner], OptionsRunner]:
    """Register ``run(bootstrap, given)`` as command NAME with ``--bootstrap`` and one option per
    field of ``model`` in ``fields`` (:func:`settings_option`).

    ``given`` holds only what the command line (or an option's own variable) gave, so ``run`` can
    put it above environment variables and defaults. ``defaults`` replace field defaults in the
    help. The function's docstring is the help.
    """

    def register(run: OptionsRunner) -> OptionsRunner:
        def command(ctx: typer.Context, bootstrap: str, **values: Any) -> None:
            run(bootstrap, {key: value for key, value in given_values(ctx).items() if key in values})

        command.__signature__ = _signature(model, fields, defaults or {})  # type: ignore[attr-defined]
        command.__doc__ = run.__doc__
        command.__name__ = run.__name__
        app.command(name, epilog=epilog)(command)
        return run

    return register


def worker_command(
    app: typer.Typer,
    name: str,
    fields: Sequence[str],
    *,
    epilog: str,
    defaults: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> Callable[[WorkerRunner], WorkerRunner]:
    """Register ``run(bootstrap, options)`` as `dspex worker NAME` with ``--bootstrap`` and the
    :class:`WorkerSettings` ``fields``.

    ``defaults`` replace field defaults for this command (shown in its help); ``fixed`` sets
    WorkerOptions fields the command does not offer. The function's docstring is the help.
    """
    command_defaults = dict(defaults or {})

    def register(run: WorkerRunner) -> WorkerRunner:
        def start(bootstrap: str, given: dict[str, Any]) -> None:
            try:
                settings = WorkerSettings.from_env(os.environ, given, command_defaults)
                settings.start_tracing(name)
                settings.start_mlflow()
                settings.register_prices()
            except ConfigurationError as exc:
                raise typer.BadParameter(str(exc)) from exc
            run(bootstrap, settings.worker_options(**(fixed or {})))

        start.__doc__ = run.__doc__
        start.__name__ = run.__name__
        options_command(app, name, WorkerSettings, fields, epilog=epilog, defaults=command_defaults)(start)
        return run

    return register


def given_values(ctx: typer.Context) -> dict[str, Any]:
    """The parameters of a command that its command line (or an option's own variable) gave."""
    given: dict[str, Any] = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in _GIVEN:
            given[name] = value
    return given


def _signature(
    model: type[BaseModel], fields: Sequence[str], defaults: Mapping[str, Any]
) -> inspect.Signature:
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter("ctx", keyword, annotation=typer.Context),
        inspect.Parameter("bootstrap", keyword, annotation=BootstrapOption, default=DEFAULT_BOOTSTRAP),
    ]
    for name in fields:
        field = model.model_fields[name]
        # a default made from other fields (default_factory) stays unset here: the model fills it
        default = defaults.get(name, None if field.default_factory else field.default)
        annotation = _annotation(model, name)
        parameters.append(inspect.Parameter(name, keyword, annotation=annotation, default=default))
    return inspect.Signature(parameters)
