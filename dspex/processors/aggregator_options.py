"""The aggregator's options, written once: the CLI builds them, the processor and its runner read them.

``dspex worker aggregate`` and ``python -m dspex.processors.aggregator`` both end in one frozen
:class:`AggregatorOptions`, and both take their flags, help, defaults and bounds from its fields
(:func:`dspex._flags.field_flags`); :func:`~dspex.processors.aggregator.build_aggregator` and
:func:`~dspex.processors.aggregator.run_aggregator` take it whole. Where a value comes from, first
match wins: the command line (or the option's own variable, such as ``DSPEX_FAST_GROUPS``), a
``DSPEX_AGGREGATOR_<OPTION>`` variable (``DSPEX_AGGREGATOR_COMMIT_EVERY=300``), the field's default.

    >>> AggregatorOptions(data_dir=Path("/tmp/agg"), commit_every=300).commit_every
    300
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from dspex._flags import FieldFlag, cli, field_flags
from dspex.errors import ConfigurationError
from dspex.observability.server import DEFAULT_METRICS_HOST, DEFAULT_TARGETS_DIR
from dspex.processors.aggregate_deaths import DEAD_AFTER_S
from dspex.processors.worker_fields import FastGroups, MetricsHost, MetricsPort, TargetsDir
from dspex.streams.config import settings_error

__all__ = ["DEFAULT_AGGREGATE_DIR", "ENV_PREFIX", "AggregatorOptions", "options_parser", "parse_options"]

ENV_PREFIX = "DSPEX_AGGREGATOR_"
DEFAULT_AGGREGATE_DIR = Path("~/.cache/dspex/aggregate")


class AggregatorOptions(BaseSettings):
    """How one aggregator process runs: its topics, local state, commits and /metrics.

    Each field is one option of both command lines; its description is the option's help.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid"
    )

    prefix: str = Field("dspex.", description="Prefix of every topic name, e.g. 'dspex.'.")
    data_dir: Path = Field(
        default_factory=lambda fields: _prefix_dir(fields["prefix"]),
        description=f"faust's local table state (default: {DEFAULT_AGGREGATE_DIR}/PREFIX).",
    )
    worker_id: str | None = Field(
        None, description="Name in heartbeats and metrics (default aggregate-HOST-PID-XXXXXX)."
    )
    fast_groups: FastGroups = False
    metrics: bool = Field(
        True,
        description="Serve /metrics: job gauges and every pipeline group's lag.",
        json_schema_extra=cli("--metrics/--no-metrics"),
    )
    metrics_port: MetricsPort = None
    metrics_host: MetricsHost = DEFAULT_METRICS_HOST
    targets_dir: TargetsDir = DEFAULT_TARGETS_DIR
    status_interval: float = Field(
        1.0, ge=0.001, description="Seconds between status messages of a job in progress."
    )
    dead_worker_after: float = Field(
        DEAD_AFTER_S,
        ge=0.001,
        description="Seconds a predictor may be silent (while other workers are heard) before it is "
        "taken for dead (killed) and its unreported LM calls show in its jobs' status.",
    )
    commit_interval: float | None = Field(
        None, ge=0.001, description="Seconds between offset commits (default: faust's, 2.8)."
    )
    commit_every: int | None = Field(
        None, ge=1, description="Records between offset commits (default: faust's, 10,000)."
    )
    replication_factor: int | None = Field(
        None,
        ge=1,
        description="Replicas of the topics it creates and of its changelogs "
        "(default: the number of brokers, at most 3).",
    )
    web_port: int | None = Field(
        None, ge=1, le=65535, description="Port of faust's web server (default: off)."
    )
    loglevel: str = Field("info", description="faust's log level.")
    otlp_endpoint: str | None = Field(
        None,
        description="Send a span per score folded into a job, in its example's trace, to this "
        "OTLP/HTTP receiver (base URL); unset: OTEL_EXPORTER_OTLP_ENDPOINT, else off.",
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise settings_error(exc, lambda field: _label(field, values)) from None


def _prefix_dir(prefix: str) -> Path:
    # one folder per prefix: aggregators of two pipelines on one host keep their state apart
    return DEFAULT_AGGREGATE_DIR.expanduser() / (prefix or "_")


def _label(field: str, given: dict[str, Any]) -> str:
    return f"AggregatorOptions.{field}" if field in given else ENV_PREFIX + field.upper()


def options_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per option, ``--bootstrap`` besides.

    Values stay strings here and only given flags (or options' own variables) are set, so pydantic
    converts and checks them, and an option not given keeps its ``DSPEX_AGGREGATOR_*`` value or
    default.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--bootstrap", default=None, help="HOST:PORT[,...] (DSPEX_KAFKA_BOOTSTRAP)")
    for option in field_flags(AggregatorOptions).values():
        _add_argument(parser, option)
    return parser


def _add_argument(parser: argparse.ArgumentParser, option: FieldFlag) -> None:
    given = os.environ.get(option.envvar) if option.envvar else None
    default = given if given else argparse.SUPPRESS
    # an on/off pair (--metrics/--no-metrics) is one BooleanOptionalAction, named by its "on" flag
    action: Any = argparse.BooleanOptionalAction if option.boolean else "store"
    parser.add_argument(option.names[0], dest=option.name, action=action, default=default, help=option.help)


def parse_options(
    argv: Iterable[str] | None, prog: str, description: str | None = None
) -> tuple[str | None, AggregatorOptions]:
    """``--bootstrap`` (None when not given) and the options from a command line.

    A bad value exits as argparse does (status 2, usage and one line naming the option).
    """
    parser = options_parser(prog, description)
    given = vars(parser.parse_args(None if argv is None else list(argv)))
    bootstrap = given.pop("bootstrap")
    try:
        return bootstrap, AggregatorOptions(**given)
    except ConfigurationError as exc:
        parser.error(str(exc))
