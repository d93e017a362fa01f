"""`dspex topics ...`: create the pipeline's topics on a broker."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from dspex.cli._common import DEFAULT_PREFIX, BootstrapOption, PrefixOption, fail, probe_or_exit
from dspex.errors import ConfigurationError, KafkaError
from dspex.streams.admin import ensure_topics
from dspex.streams.config import DEFAULT_BOOTSTRAP, KafkaSettings
from dspex.streams.topics import DEFAULT_PARTITIONS, TopicRegistry

__all__ = ["register"]

topics_app = typer.Typer(
    name="topics",
    help="Manage the pipeline's Kafka topics.",
    no_args_is_help=True,
)

PartitionsOption = Annotated[
    int,
    typer.Option(
        "--partitions", min=1, help="Partitions of the tasks topic (at least 8).", show_default=True
    ),
]
ReplicationOption = Annotated[
    int,
    typer.Option("--replication-factor", min=1, help="Replication factor of every topic.", show_default=True),
]


@topics_app.command(
    "create",
    epilog="Example: dspex topics create --bootstrap 127.0.0.1:9092 --prefix dspex. --partitions 32",
)
def create(
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
    partitions: PartitionsOption = DEFAULT_PARTITIONS["tasks"],
    replication_factor: ReplicationOption = 1,
) -> None:
    """Create every topic of the pipeline that does not exist yet (safe to run again).

    Existing topics are checked, never changed: too few partitions is an error.
    """
    try:
        registry = TopicRegistry(
            prefix, partitions={"tasks": partitions}, replication_factor=replication_factor
        )
        settings = KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    probe_or_exit(settings)
    try:
        result = ensure_topics(settings, registry)
    except KafkaError as exc:
        fail(str(exc))
    for spec in registry.specs():
        state = "created" if spec.name in result.created else "exists "
        compacted = ", compacted" if spec.compacted else ""
        plural = "" if spec.partitions == 1 else "s"
        typer.echo(f"{state} {spec.name} ({spec.partitions} partition{plural}{compacted})")


def register(app: typer.Typer) -> None:
    """Add `dspex topics` to the root command."""
    app.add_typer(topics_app, name="topics")
