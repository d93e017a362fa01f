"""`dspex topics ...`: create the pipeline's topics on a broker, and set how long they keep records."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from dspex.cli._common import DEFAULT_PREFIX, BootstrapOption, PrefixOption, fail, probe_or_exit
from dspex.cli._topic_configs import set_topic_configs
from dspex.errors import ConfigurationError, KafkaError
from dspex.streams.admin import ensure_topics
from dspex.streams.config import DEFAULT_BOOTSTRAP, KafkaSettings
from dspex.streams.retention import RETENTION_CLASSES, describe_duration, parse_retention, retention_config
from dspex.streams.topics import DEFAULT_PARTITIONS, TopicRegistry, TopicSpec

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
_CLASSES = "; ".join(f"{name}: {', '.join(roles)}" for name, roles in RETENTION_CLASSES.items())
RetentionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--retention",
        metavar="CLASS=DURATION",
        help=f"How long a class of topics keeps records, e.g. results=30d (repeatable; s m h d w, or "
        f"forever). Classes: {_CLASSES}. state sets how soon purged values leave the disk. Applied to "
        "existing topics too.",
        show_default=False,
    ),
]


@topics_app.command(
    "create",
    epilog="Example: dspex topics create --bootstrap 127.0.0.1:9092 --prefix dspex. --partitions 32 "
    "--retention results=30d --retention work=2d",
)
def create(
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
    partitions: PartitionsOption = DEFAULT_PARTITIONS["tasks"],
    replication_factor: ReplicationOption = 1,
    retention: RetentionOption = None,
) -> None:
    """Create every topic of the pipeline that does not exist yet (safe to run again).

    Existing topics are checked (too few partitions is an error) and otherwise left alone, but for
    the retention settings --retention names, which are set on them.
    """
    try:
        asked = retention_config(parse_retention(retention or []))
        registry = TopicRegistry(
            prefix, partitions={"tasks": partitions}, replication_factor=replication_factor, config=asked
        )
        settings = KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    probe_or_exit(settings)
    try:
        result = ensure_topics(settings, registry)
        existing = {spec.name: asked[spec.role] for spec in registry.specs() if spec.role in asked}
        changed = set_topic_configs(settings, {n: c for n, c in existing.items() if n in result.existed})
    except KafkaError as exc:
        fail(str(exc))
    for spec in registry.specs():
        state = "created" if spec.name in result.created else "exists "
        typer.echo(f"{state} {spec.name} ({_shape(spec)}){_changed(changed.get(spec.name))}")


def _shape(spec: TopicSpec) -> str:
    parts = [f"{spec.partitions} partition{'' if spec.partitions == 1 else 's'}"]
    if spec.compacted:
        parts.append("compacted")
    if "retention.ms" in spec.config:
        parts.append(f"retention {describe_duration(int(spec.config['retention.ms']))}")
    return ", ".join(parts)


def _changed(settings: dict[str, str] | None) -> str:
    if not settings:
        return ""
    return "; set " + ", ".join(f"{key}={value}" for key, value in sorted(settings.items()))


def register(app: typer.Typer) -> None:
    """Add `dspex topics` to the root command."""
    app.add_typer(topics_app, name="topics")
