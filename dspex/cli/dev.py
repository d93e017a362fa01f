"""`dspex dev ...`: the development broker and a connectivity check.

Example: dspex dev broker start --port 9092
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dspex.cli._common import DEFAULT_BOOTSTRAP, BootstrapOption, probe_or_exit
from dspex.dev.broker import BrokerStatus, DevBroker, kafka_version

__all__ = ["register"]

dev_app = typer.Typer(
    help="Development tools: a local Kafka broker and a connectivity check.",
    epilog="Example: dspex dev broker start, then dspex dev ping --bootstrap 127.0.0.1:9092",
    no_args_is_help=True,
)
broker_app = typer.Typer(
    help=(
        "A single-node Apache Kafka broker (KRaft) from Maven Central's jars, on 127.0.0.1. "
        "Needs Java 17+ and Maven; the jars are copied once into a cache folder."
    ),
    epilog="Example: dspex dev broker start --port 9092 --data-dir /tmp/kafka-dev",
    no_args_is_help=True,
)
dev_app.add_typer(broker_app, name="broker")

PortOption = Annotated[int, typer.Option("--port", min=1, max=65535, help="Broker port on 127.0.0.1.")]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        file_okay=False,
        help="Where storage, pid file and broker.log live. [default: ~/.cache/dspex/broker-PORT]",
    ),
]
CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        envvar="DSPEX_KAFKA_CACHE_DIR",
        file_okay=False,
        help="Where Kafka's jars are copied once. [default: ~/.cache/dspex/kafka/VERSION]",
    ),
]


def register(app: typer.Typer) -> None:
    """Add `dspex dev` to the root app."""
    app.add_typer(dev_app, name="dev")


def _broker(port: int, data_dir: Path | None, cache_dir: Path | None) -> DevBroker:
    return DevBroker(port=port, data_dir=data_dir, cache_dir=cache_dir, notify=_progress)


def _progress(message: str) -> None:
    typer.echo(f"{message} ...", err=True)


def _describe(status: BrokerStatus) -> str:
    where = f"pid {status.pid}, data dir {status.data_dir}"
    return f"Kafka {status.kafka_version} on {status.bootstrap} ({where})"


@broker_app.command(epilog="Example: dspex dev broker start --port 9092")
def start(port: PortOption = 9092, data_dir: DataDirOption = None, cache_dir: CacheDirOption = None) -> None:
    """Start the broker (fetching the jars first if needed) and wait until it answers."""
    broker = _broker(port, data_dir, cache_dir)
    started = broker.start()
    typer.echo(("started " if started else "already running: ") + _describe(broker.status()))


@broker_app.command(epilog="Example: dspex dev broker stop --port 9092")
def stop(port: PortOption = 9092, data_dir: DataDirOption = None) -> None:
    """Stop the broker by the pid recorded in its data directory."""
    broker = _broker(port, data_dir, None)
    pid = broker.stop()
    if pid is None:
        typer.echo(f"no dev broker was running from {broker.data_dir}")
    else:
        typer.echo(f"stopped the Kafka broker on {broker.bootstrap} (pid {pid})")


@broker_app.command(epilog="Example: dspex dev broker status --port 9092")
def status(port: PortOption = 9092, data_dir: DataDirOption = None) -> None:
    """Say whether the broker of a data directory runs and answers a metadata request."""
    broker = _broker(port, data_dir, None)
    found = broker.status()
    if found.state == "running":
        typer.echo(f"running: {_describe(found)}")
    elif found.state == "unresponsive":
        silent = f"pid {found.pid} lives but {found.bootstrap} does not answer"
        typer.echo(f"not answering: {silent}; see {broker.log_file}")
    else:
        typer.echo(f"stopped: no dev broker runs from {broker.data_dir}")


@broker_app.command(epilog="Example: dspex dev broker fetch --cache-dir /opt/dspex/kafka")
def fetch(cache_dir: CacheDirOption = None) -> None:
    """Copy Kafka's jars from Maven Central into the cache folder (once; later calls do nothing)."""
    broker = _broker(9092, None, cache_dir)
    was_fetched = broker.is_fetched()
    libs = broker.fetch()
    jars = len(list(libs.glob("*.jar")))
    verb = "already in" if was_fetched else "copied into"
    typer.echo(f"Kafka {kafka_version()} jars {verb} {libs} ({jars} jars)")


@dev_app.command(epilog="Example: dspex dev ping --bootstrap 127.0.0.1:9092")
def ping(bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP) -> None:
    """Check that a Kafka broker answers a metadata request at --bootstrap."""
    metadata = probe_or_exit(bootstrap)
    typer.echo(
        f"Kafka at {bootstrap} answered: cluster {metadata.cluster_id}, "
        f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)"
    )
