"""Job ids on the command line: a unique prefix names a job, as git's short hashes name commits.

Every command that takes a job id resolves it here, against the latest status of every job on the
status topic: the exact id wins, else the one job whose id starts with what was typed. A prefix that
fits several jobs is bad usage (exit 2) and lists them; one that fits none exits 1.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import typer
from confluent_kafka import Consumer, KafkaException, TopicPartition

from dspex.cli._common import fail
from dspex.errors import KafkaError
from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.fetch import consume_ready
from dspex.streams.partitioner import partition_for

__all__ = [
    "SHORT_ID",
    "ResolvedJob",
    "StatusSource",
    "age",
    "duration",
    "matching",
    "on_jobs_topic",
    "resolve_job",
    "short_ids",
    "submitted_at",
    "values_keyed",
]

logger = logging.getLogger(__name__)

SHORT_ID = 12
"""Characters of a job id shown in tables (more when two ids share them)."""

_LISTED = 10  # candidates listed for an ambiguous prefix


class StatusSource(Protocol):
    """What resolution reads (``dspex.client.Client`` has it)."""

    def status(self, job_id: str) -> Any: ...

    def jobs(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ResolvedJob:
    """A job id as the cluster knows it, with its latest status (None: submitted, no status yet)."""

    job_id: str
    status: Any


def matching(prefix: str, job_ids: Iterable[str]) -> list[str]:
    """The ids that start with ``prefix`` (case-insensitive: ids are lowercase hex), sorted."""
    wanted = prefix.strip().lower()
    return sorted(job_id for job_id in job_ids if job_id.lower().startswith(wanted))


def resolve_job(
    source: StatusSource,
    given: str,
    *,
    where: str,
    submitted: Callable[[str], bool] | None = None,
    purged: Callable[[str], bool] | None = None,
) -> ResolvedJob:
    """The job ``given`` names: the exact id, else the one job whose id starts with it.

    Exits 2 listing the candidates when several jobs match, 1 when none does (``where`` names the
    status topic in that message). ``submitted``, when given, is asked about an exact id no status
    names yet (a job on the jobs topic that no worker picked up): True resolves it with no status.
    ``purged``, asked before it, says whether that id's status was deleted (``dspex purge``): exit 1.
    """
    if not given.strip():
        raise typer.BadParameter("a job id cannot be empty", param_hint="JOB")
    status = source.status(given)
    if status is not None:
        return ResolvedJob(given, status)
    jobs = source.jobs()
    found = matching(given, jobs)
    if len(found) == 1:
        return ResolvedJob(found[0], jobs[found[0]])
    if found:
        raise typer.BadParameter(_ambiguous(given, found, jobs), param_hint="JOB")
    if purged is not None and purged(given):
        fail(f"job {given} was purged (`dspex purge`): its status and results are gone")
    if submitted is not None and submitted(given):
        return ResolvedJob(given, None)
    fail(
        f"no job {given} on {where} (a job submitted moments ago has its first status within a "
        "second of an aggregator or optimizer worker picking it up; `dspex status` lists the jobs)"
    )


def _ambiguous(given: str, found: list[str], jobs: Mapping[str, Any]) -> str:
    rows = sorted(found, key=lambda job_id: submitted_at(jobs[job_id]) or datetime.min.replace(tzinfo=UTC))
    lines = [f"{given!r} matches {len(found)} jobs; type more of the id:"]
    for job_id in rows[:_LISTED]:
        status = jobs[job_id]
        label = f" {status.name!r}" if getattr(status, "name", None) else ""
        lines.append(f"  {job_id}  {status.kind:<8} {status.state:<9}{label}")
    if len(found) > _LISTED:
        lines.append(f"  ... and {len(found) - _LISTED} more")
    return "\n".join(lines)


def on_jobs_topic(settings: KafkaSettings, topic: str, job_id: str, *, timeout: float = 10.0) -> bool:
    """Whether a record keyed ``job_id`` is on the jobs ``topic``: a job submitted that no worker
    has given a status yet. KafkaError when the broker does not answer."""
    with values_keyed(settings, topic, job_id, timeout=timeout) as values:
        return any(True for _ in values)


@contextlib.contextmanager
def values_keyed(
    settings: KafkaSettings, topic: str, key: str, *, timeout: float = 10.0
) -> Iterator[Iterator[bytes | None]]:
    """The values of the records keyed ``key`` on ``topic``, oldest first (None: a tombstone), read
    from the one partition the key hashes to (as every dspex producer places it) up to its end at
    the time of asking. KafkaError when the broker does not answer or the end takes too long."""
    consumer = Consumer(client_config(settings, logger, **{"group.id": f"dspex-cli-{uuid.uuid4().hex}"}))
    try:
        yield _values_keyed(consumer, topic, key.encode("utf-8"), timeout)
    except KafkaException as exc:
        raise KafkaError(f"could not read {topic}: {exc}", topic=topic) from exc
    finally:
        consumer.close()


def _values_keyed(consumer: Consumer, topic: str, key: bytes, timeout: float) -> Iterator[bytes | None]:
    found = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return
    where = TopicPartition(topic, partition_for(key, len(found.partitions)))
    low, high = consumer.get_watermark_offsets(where, timeout=timeout)
    if high <= low:
        return
    consumer.assign([TopicPartition(topic, where.partition, low)])
    deadline = time.monotonic() + max(timeout, 30.0)
    while time.monotonic() < deadline:
        for message in consume_ready(consumer, 1000, 0.2):
            if message.error() is not None:
                continue
            if message.key() == key:
                yield message.value()
            if int(message.offset() or 0) >= high - 1:
                return
    raise KafkaError(f"reading {topic} to its end took too long", topic=topic)


def short_ids(job_ids: Iterable[str], length: int = SHORT_ID) -> dict[str, str]:
    """Each id cut to ``length`` characters, or longer where that would not tell two ids apart."""
    ids = sorted(set(job_ids))
    short: dict[str, str] = {}
    for index, job_id in enumerate(ids):
        neighbours = ids[max(index - 1, 0) : index] + ids[index + 1 : index + 2]
        shared = max((_common_prefix(job_id, other) for other in neighbours), default=0)
        short[job_id] = job_id[: max(length, shared + 1)]
    return short


def _common_prefix(a: str, b: str) -> int:
    count = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        count += 1
    return count


def submitted_at(status: Any) -> datetime | None:
    """When the cluster first saw the job (its status's ``started_at``; else its first update)."""
    return getattr(status, "started_at", None) or getattr(status, "updated_at", None)


def age(then: datetime | None, now: datetime) -> str:
    """How long before ``now`` ``then`` was, as :func:`duration` writes it (``-`` when unknown)."""
    return duration(None if then is None else (now - then).total_seconds())


def duration(seconds: float | None) -> str:
    """A short duration: ``42s``, ``3m05s``, ``2h14m``, ``3d04h`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{whole:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
