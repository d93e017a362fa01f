"""The aggregator's options, written once: the CLI builds them, the processor and its runner read them.

``dspex worker aggregate`` and ``python -m dspex.processors.aggregator`` both end in one frozen
:class:`AggregatorOptions`; :func:`~dspex.processors.aggregator.build_aggregator` and
:func:`~dspex.processors.aggregator.run_aggregator` take it whole. An option a command line does
not give may come from a ``DSPEX_AGGREGATOR_*`` variable (``DSPEX_AGGREGATOR_COMMIT_EVERY=300``).

    >>> AggregatorOptions(data_dir=Path("/tmp/agg"), commit_every=300).commit_every
    300
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from dspex.errors import ConfigurationError
from dspex.observability.server import DEFAULT_METRICS_HOST, DEFAULT_TARGETS_DIR
from dspex.processors.aggregate_deaths import DEAD_AFTER_S
from dspex.streams.config import settings_error

__all__ = ["ENV_PREFIX", "AggregatorOptions", "options_parser", "parse_options"]

ENV_PREFIX = "DSPEX_AGGREGATOR_"

# Command-line spellings that differ from ``--field-name`` (kept for existing scripts).
_FLAGS = {"targets_dir": "--prometheus-targets-dir", "metrics": "--no-metrics"}


class AggregatorOptions(BaseSettings):
    """How one aggregator process runs: its topics, local state, commits and /metrics."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid"
    )

    prefix: str = Field("dspex.", description="topic name prefix")
    data_dir: Path = Field(description="faust's local table state")
    fast_groups: bool = Field(False, description="short session timeout (dev, tests)")
    status_interval: float = Field(1.0, gt=0, description="seconds between status sends")
    dead_worker_after: float = Field(
        DEAD_AFTER_S,
        gt=0,
        description="seconds without a heartbeat (while other workers' arrive) after which a "
        "predictor that did not stop in order is dead: its unreported LM calls are reported",
    )
    web_port: int | None = Field(None, ge=1, le=65535, description="faust's web server (off)")
    worker_id: str | None = Field(None, description="default: aggregate-HOST-PID-XXXXXX")
    replication_factor: int | None = Field(None, ge=1, description="default: brokers, at most 3")
    commit_interval: float | None = Field(None, gt=0, description="seconds (faust: 2.8)")
    commit_every: int | None = Field(None, ge=1, description="records (faust: 10,000)")
    loglevel: str = Field("info", description="faust's log level")
    metrics: bool = Field(True, description="serve /metrics")
    metrics_host: str = Field(DEFAULT_METRICS_HOST, description="address /metrics listens on")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="default: free in 9400-9499")
    targets_dir: Path | None = Field(DEFAULT_TARGETS_DIR, description="Prometheus file_sd targets")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise settings_error(exc, lambda field: _label(field, values)) from None


def _label(field: str, given: dict[str, Any]) -> str:
    return f"AggregatorOptions.{field}" if field in given else ENV_PREFIX + field.upper()


def options_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per option, ``--bootstrap`` besides.

    Values stay strings here and only given flags are set (``argparse.SUPPRESS``), so pydantic
    converts and checks them, and an option not given keeps its environment value or default.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--bootstrap", default=None, help="HOST:PORT[,...] (DSPEX_KAFKA_BOOTSTRAP)")
    for name, field in AggregatorOptions.model_fields.items():
        flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
        if field.annotation is bool:
            action = "store_false" if field.default else "store_true"
            parser.add_argument(flag, dest=name, action=action, default=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=field.description)
    return parser


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
