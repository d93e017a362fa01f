"""What every `dspex` command shares: the Kafka options, the broker probe, and how to fail.

Conventions: `--bootstrap HOST:PORT` on every command that talks to Kafka (default from
DSPEX_KAFKA_BOOTSTRAP, else 127.0.0.1:9092), `--prefix` for the topic prefix, exit codes
0 (ok), 1 (failed, with the reason on stderr) and 2 (bad usage, from typer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NoReturn, Protocol

import typer
from confluent_kafka.admin import ClusterMetadata

from dspex.dev.probe import probe_metadata
from dspex.errors import BrokerUnavailableError

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_PREFIX",
    "PROBE_TIMEOUT_S",
    "BootstrapOption",
    "ConfluentSettings",
    "PrefixOption",
    "fail",
    "kafka_config",
    "probe_or_exit",
]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_PREFIX = "dspex."
# Below the 10 s in which every command must say that no broker answered.
PROBE_TIMEOUT_S = 8.0

BootstrapOption = Annotated[
    str,
    typer.Option(
        "--bootstrap",
        envvar="DSPEX_KAFKA_BOOTSTRAP",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers, comma-separated.",
    ),
]
PrefixOption = Annotated[
    str,
    typer.Option("--prefix", metavar="PREFIX", help="Prefix of every topic name, e.g. 'dspex.'."),
]


def fail(message: str) -> NoReturn:
    """Print ``message`` to stderr and exit 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def kafka_config(bootstrap: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka settings from the command-line options (security settings come in ``extra``)."""
    return {**(extra or {}), "bootstrap.servers": bootstrap}


class ConfluentSettings(Protocol):
    """What a settings object needs for the probe (``dspex.streams.config.KafkaSettings`` has it)."""

    bootstrap_servers: str

    def confluent(self) -> dict[str, Any]: ...


def probe_or_exit(
    settings: str | ConfluentSettings,
    config: Mapping[str, Any] | None = None,
    *,
    timeout: float = PROBE_TIMEOUT_S,
) -> ClusterMetadata:
    """Ask the broker for metadata; on no answer, say where we tried and how to start one, exit 1.

    ``settings`` is a bootstrap string or a settings object whose security options the probe
    must use too; ``config`` adds librdkafka properties.
    """
    if isinstance(settings, str):
        bootstrap, merged = settings, dict(config or {})
    else:
        bootstrap, merged = settings.bootstrap_servers, {**settings.confluent(), **(config or {})}
    try:
        return probe_metadata(bootstrap, config=merged, timeout=timeout)
    except BrokerUnavailableError as exc:
        fail(str(exc))
