"""`dspex dlq list|replay`: look at the dead-letter topic and send its messages back after a fix.

Every message a worker could not process sits on ``PREFIXdlq`` as a DeadLetter: the original key,
value and headers byte for byte, where it was (topic, partition, offset), why (a reason code such
as ``schema_invalid`` or ``security_policy``) and the job it belongs to when its headers said so.

* ``dspex dlq list [--job J] [--reason R] [--json]``: one line per dead letter (or JSON objects);
* ``dspex dlq replay [--job J] [--reason R] [--dry-run]``: produce each selected message again to
  its original topic with its original key, value and headers (after the fix: an allow-list
  widened, a candidate published). Ids are deterministic, so a task that was meanwhile handled
  is de-duplicated downstream; a replayed message that fails again is dead-lettered again.

The topic is read from its beginning up to its current end, without a consumer group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as RawKafkaError
from rich.console import Console
from rich.table import Table

from dspex.cli._common import DEFAULT_PREFIX, BootstrapOption, PrefixOption, fail, probe_or_exit
from dspex.errors import ConfigurationError, KafkaError, SchemaError
from dspex.schemas import DeadLetter, decode
from dspex.streams.admin import retry_while_leaders_settle
from dspex.streams.config import DEFAULT_BOOTSTRAP, KafkaSettings, client_config
from dspex.streams.fetch import consume_ready
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

__all__ = ["StoredLetter", "read_dead_letters", "register", "replay_dead_letters"]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("dspex.streams.librdkafka.dlq")
_READ_TIMEOUT_S = 10.0
_POLL_S = 0.2
_ERROR_CHARS = 120

dlq_app = typer.Typer(
    name="dlq", help="List dead-lettered messages and replay them to their topics.", no_args_is_help=True
)

JobOption = Annotated[str | None, typer.Option("--job", help="Only dead letters of this job id.")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Only this reason (e.g. schema_invalid, security_policy).")
]


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter and where it sits on the DLQ topic."""

    partition: int
    offset: int
    letter: DeadLetter


def read_dead_letters(
    settings: KafkaSettings, topic: str, *, timeout: float = _READ_TIMEOUT_S
) -> list[StoredLetter]:
    """Every dead letter on ``topic`` now, in partition then offset order (unreadable ones skipped)."""
    consumer = Consumer(
        client_config(
            settings,
            _librdkafka_logger,
            **{"group.id": "dspex-dlq-reader", "enable.auto.commit": False, "enable.partition.eof": True},
        )
    )
    try:
        return _read_all(consumer, topic, timeout)
    except KafkaException as exc:
        raise KafkaError(f"could not read {topic}: {exc}", topic=topic) from exc
    finally:
        consumer.close()


def _read_all(consumer: Consumer, topic: str, timeout: float) -> list[StoredLetter]:
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise KafkaError(f"topic {topic} does not exist on this broker", topic=topic)
    ends = {p: _end_offset(consumer, topic, p, timeout) for p in metadata.partitions}
    wanted = {p for p, end in ends.items() if end > 0}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(wanted)])
    found: list[StoredLetter] = []
    deadline = time.monotonic() + timeout
    while wanted:
        messages = consume_ready(consumer, 500, _POLL_S)
        if not messages and time.monotonic() > deadline:
            raise KafkaError(f"reading {topic} stalled with partitions {sorted(wanted)} unread", topic=topic)
        if messages:
            deadline = time.monotonic() + timeout
        for message in messages:
            partition, offset, error = message.partition() or 0, message.offset() or 0, message.error()
            if error is None:
                found.extend(_stored(partition, offset, message.value()))
            if (error is not None and error.code() == RawKafkaError._PARTITION_EOF) or (
                error is None and offset + 1 >= ends[partition]
            ):
                wanted.discard(partition)
    return sorted(found, key=lambda item: (item.partition, item.offset))


def _end_offset(consumer: Consumer, topic: str, partition: int, timeout: float) -> int:
    where = TopicPartition(topic, partition)
    return int(
        retry_while_leaders_settle(lambda: consumer.get_watermark_offsets(where, timeout=timeout), timeout)[1]
    )


def _stored(partition: int, offset: int, value: bytes | None) -> list[StoredLetter]:
    try:
        return [StoredLetter(partition, offset, decode(value, DeadLetter))]
    except SchemaError as exc:
        logger.warning("DLQ record at partition %s offset %s is not a DeadLetter: %s", partition, offset, exc)
        return []


def select(letters: list[StoredLetter], job: str | None, reason: str | None) -> list[StoredLetter]:
    """The letters of ``job`` with ``reason`` (None: any)."""
    return [
        item
        for item in letters
        if (job is None or item.letter.job_id == job) and (reason is None or item.letter.reason == reason)
    ]


async def replay_dead_letters(settings: KafkaSettings, letters: list[StoredLetter]) -> int:
    """Produce every letter's original record to its original topic; returns how many were acknowledged."""
    async with AsyncProducer(settings) as producer:
        pending = [
            await producer.send(
                item.letter.original_topic,
                item.letter.value_bytes(),
                key=item.letter.key_bytes(),
                headers=item.letter.raw_headers(),
            )
            for item in letters
        ]
        await asyncio.gather(*pending)
    return len(pending)


# ------------------------------------------------------------------------------------ commands


def _settings(bootstrap: str) -> KafkaSettings:
    try:
        settings = KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    probe_or_exit(settings)
    return settings


def _load(bootstrap: str, prefix: str, job: str | None, reason: str | None) -> list[StoredLetter]:
    settings = _settings(bootstrap)
    topic = TopicRegistry(prefix).name("dlq")
    try:
        return select(read_dead_letters(settings, topic), job, reason)
    except KafkaError as exc:
        fail(str(exc))


def _as_json(item: StoredLetter) -> dict[str, Any]:
    return {"dlq_partition": item.partition, "dlq_offset": item.offset, **item.letter.model_dump(mode="json")}


def _table(letters: list[StoredLetter]) -> Table:
    table = Table(title=f"{len(letters)} dead letters")
    for column in ("from", "reason", "job", "candidate", "example", "worker", "error"):
        table.add_column(column, overflow="fold")
    for item in letters:
        letter = item.letter
        error = (
            letter.error if len(letter.error) <= _ERROR_CHARS else letter.error[: _ERROR_CHARS - 3] + "..."
        )
        table.add_row(
            f"{letter.original_topic}[{letter.partition}]@{letter.offset}",
            letter.reason,
            letter.job_id or "-",
            (letter.candidate_id or "-")[:12],
            "-" if letter.example_index is None else str(letter.example_index),
            letter.worker_id,
            error,
        )
    return table


@dlq_app.command("list", epilog="Example: dspex dlq list --prefix dspex. --job job-1a2b --json")
def list_command(
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
    job: JobOption = None,
    reason: ReasonOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line, all fields.")] = False,
) -> None:
    """List the dead letters on PREFIXdlq (original position, reason, job, error)."""
    letters = _load(bootstrap, prefix, job, reason)
    if as_json:
        for item in letters:
            typer.echo(json.dumps(_as_json(item)))
        return
    Console().print(_table(letters))


@dlq_app.command("replay", epilog="Example: dspex dlq replay --prefix dspex. --reason security_policy")
def replay_command(
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
    job: JobOption = None,
    reason: ReasonOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be replayed; send nothing.")
    ] = False,
) -> None:
    """Send dead letters back to their original topics (original key, value and headers)."""
    letters = _load(bootstrap, prefix, job, reason)
    if dry_run:
        Console().print(_table(letters))
        typer.echo(f"dry run: {len(letters)} messages would be replayed")
        return
    try:
        sent = asyncio.run(replay_dead_letters(_settings(bootstrap), letters))
    except KafkaError as exc:
        fail(str(exc))
    topics = sorted({item.letter.original_topic for item in letters})
    typer.echo(f"replayed {sent} messages to {', '.join(topics) or 'no topic'}")


def register(app: typer.Typer) -> None:
    """Add `dspex dlq` to the root command."""
    app.add_typer(dlq_app, name="dlq")
