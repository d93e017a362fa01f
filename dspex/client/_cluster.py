"""Reading what the cluster says about jobs: status, score records, heartbeats and group lag.

Each function opens its own short-lived reader; a job's records are read from the one partition
its key hashes to, with a full scan only as a fallback when that partition does not hold as
many records as the job's status counted (a writer that partitioned differently).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from confluent_kafka import Message

from dspex.client._collector import collector_paused
from dspex.client._reader import AsyncPartitionReader, PartitionReader, keyed
from dspex.client.progress import JobProgress
from dspex.client.results import EvaluatedScore, dedupe, first_unseen
from dspex.errors import JobError, KafkaError, SchemaError, TopicError
from dspex.schemas import (
    JobStatus,
    OptimizeStatus,
    ScoreRecord,
    StatusMessage,
    WorkerHeartbeat,
    decode,
    is_usage_report,
)
from dspex.streams.admin import GroupLag, KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry

__all__ = [
    "WORKER_GROUPS",
    "Follow",
    "ScoreTail",
    "decode_heartbeat",
    "decode_status",
    "follow_status",
    "follow_statuses",
    "read_all_latest",
    "read_lag",
    "read_scores",
    "read_scores_of",
    "read_status",
    "stream_scores",
]

logger = logging.getLogger(__name__)

WORKER_GROUPS: dict[str, tuple[str, str]] = {
    "predict": ("predict", "tasks"),
    "score": ("score", "predictions"),
    "aggregate": ("aggregate", "scores"),
}
"""Worker kind -> (consumer group suffix after the prefix, topic role it consumes)."""

# Scores of a job are written after it was submitted; this covers clocks that disagree.
_CLOCK_SLACK = timedelta(minutes=10)
_POLL_S = 0.25
# Short, because finish() waits for the poll in progress before reading the rest.
_TAIL_POLL_S = 0.05


@dataclass(frozen=True)
class Follow:
    """Where to follow one job's status from, and how to show it."""

    job_id: str
    partition: int | None = None
    start: int | None = None
    total: int = 0
    display_progress: bool = False
    timeout: float | None = None
    label: str | None = None
    on_status: Callable[[Any], None] | None = None  # sees every status read (a caller's own display)


def _decode_status(value: bytes | None) -> JobStatus | OptimizeStatus | None:
    try:
        status: JobStatus | OptimizeStatus = decode(value, StatusMessage)  # a union: decode gives Any
    except SchemaError as exc:
        logger.warning("skipping an unreadable status: %s", exc)
        return None
    return status


async def read_status(
    settings: KafkaSettings, registry: TopicRegistry, job_id: str
) -> JobStatus | OptimizeStatus | None:
    """The latest status of ``job_id`` (JobStatus or OptimizeStatus), or None if it has none."""
    async with _reader(settings, registry.name("status")) as (reader, run):
        try:
            partition = await run(reader.partition_of, job_id)
        except TopicError:
            return None
        await run(reader.assign, {partition: None})
        values = keyed(await run(reader.read_to_end), job_id)
    latest: JobStatus | OptimizeStatus | None = None
    for value in values:
        latest = None if value is None else (_decode_status(value) or latest)
    return latest


async def follow_status(
    settings: KafkaSettings, registry: TopicRegistry, follow: Follow
) -> JobStatus | OptimizeStatus:
    """Wait until ``follow.job_id`` reaches a terminal state; returns that status.

    JobError when ``follow.timeout`` seconds pass first (the job keeps running).
    """
    loop = asyncio.get_running_loop()
    deadline = None if follow.timeout is None else loop.time() + follow.timeout
    latest: JobStatus | OptimizeStatus | None = None
    async with _reader(settings, registry.name("status")) as (reader, run):
        partition = follow.partition
        if partition is None:
            partition = await run(reader.partition_of, follow.job_id)
        await run(reader.assign, {partition: follow.start})
        with JobProgress(
            follow.job_id, follow.total, enabled=follow.display_progress, label=follow.label
        ) as bar:
            while latest is None or not latest.finished:
                if deadline is not None and loop.time() > deadline:
                    raise _timed_out(follow, latest)
                for value in keyed(await run(reader.poll, _POLL_S), follow.job_id):
                    latest = _decode_status(value) or latest
                    if follow.on_status is not None and latest is not None:
                        follow.on_status(latest)
                    if isinstance(latest, JobStatus):
                        bar.update(latest)
                    elif isinstance(latest, OptimizeStatus):
                        bar.update_optimization(latest)
    return latest


async def follow_statuses(
    settings: KafkaSettings, registry: TopicRegistry, follows: Sequence[Follow], *, timeout: float | None
) -> dict[str, Any]:
    """Wait until every job of ``follows`` (each with its partition and start) is terminal, with one
    reader for all of them; returns ``job_id -> terminal status``.

    JobError naming the first unfinished job when ``timeout`` seconds pass first.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    latest: dict[str, Any] = {}
    pending = {follow.job_id for follow in follows}
    async with _reader(settings, registry.name("status")) as (reader, run):
        await run(reader.assign, _earliest_starts(follows))
        while pending:
            if deadline is not None and loop.time() > deadline:
                first = next(f for f in follows if f.job_id in pending)
                raise _timed_out(Follow(first.job_id, timeout=timeout), latest.get(first.job_id))
            for message in await run(reader.poll, _POLL_S):
                job_id = (message.key() or b"").decode("utf-8", "replace")
                if job_id in pending:
                    latest[job_id] = _decode_status(message.value()) or latest.get(job_id)
                    if latest[job_id] is not None and latest[job_id].finished:
                        pending.discard(job_id)
    return latest


def _earliest_starts(follows: Sequence[Follow]) -> dict[int, int | None]:
    """Per partition, the earliest start among the jobs read from it (None: the beginning)."""
    starts: dict[int, int | None] = {}
    for follow in follows:
        if follow.partition is None:
            raise ValueError(f"job {follow.job_id}: following several jobs needs their partitions")
        known = starts.get(follow.partition, follow.start)
        starts[follow.partition] = None if known is None or follow.start is None else min(known, follow.start)
    return starts


def _timed_out(follow: Follow, latest: Any) -> JobError:
    state = None if latest is None else latest.state
    progress = ""
    if isinstance(latest, JobStatus):
        progress = f", {latest.done:,} of {latest.total_tasks:,} tasks done"
    return JobError(
        f"job {follow.job_id} did not finish within {follow.timeout} s "
        f"(last state: {state or 'no status yet'}{progress}); "
        f"it keeps running: `dspex status {follow.job_id}`, `dspex cancel {follow.job_id}`",
        job_id=follow.job_id,
        state=state,
    )


async def read_scores(
    settings: KafkaSettings,
    registry: TopicRegistry,
    job_id: str,
    *,
    partition: int | None = None,
    start: int | None = None,
    status: Any = None,
) -> list[ScoreRecord]:
    """The job's score records, de-duplicated (first per candidate and example index)."""
    records: list[ScoreRecord] = []
    batches = stream_scores(settings, registry, job_id, status=status, partition=partition, start=start)
    async for batch in batches:
        records.extend(batch)
    return records


async def stream_scores(
    settings: KafkaSettings,
    registry: TopicRegistry,
    job_id: str,
    *,
    status: Any,
    partition: int | None = None,
    start: int | None = None,
) -> AsyncIterator[list[ScoreRecord]]:
    """The job's score records in batches as they are read, de-duplicated like :func:`read_scores`
    (the first per candidate and example index), in the partition's order, up to the partition's end
    as it is when reading starts. Only the example indexes seen per candidate are kept, not the
    records, so a job of millions of examples can be written out as it is read."""
    seen: dict[str, set[int]] = {}  # candidate -> example indexes: one str per candidate, not per record
    async with _reader(settings, registry.name("scores")) as (reader, run):
        if partition is None:
            partition = await run(reader.partition_of, job_id)
        if start is None:
            start = await run(_start_offset, reader, partition, status)
        await run(reader.assign, {partition: start})
        async for batch in _unseen_batches(reader, run, job_id, seen):
            yield batch
        expected, found = _counted(status), sum(map(len, seen.values()))
        if found < expected:
            logger.warning(
                "partition %s of %s holds %s of the %s results of job %s; scanning every partition",
                partition, reader.topic, found, expected, job_id,
            )  # fmt: skip
            await run(reader.assign, dict.fromkeys(range(await run(reader.partition_count))))
            async for batch in _unseen_batches(reader, run, job_id, seen):
                yield batch


async def _unseen_batches(
    reader: PartitionReader, run: Callable[..., Any], job_id: str, seen: dict[str, set[int]]
) -> AsyncIterator[list[ScoreRecord]]:
    """Records of ``job_id`` not in ``seen`` (added to it), batch by batch up to the ends as they are now."""
    ends = await run(reader.ends)
    last_progress = asyncio.get_running_loop().time()
    while not await run(reader.reached, ends):
        messages = await run(reader.poll, _POLL_S)
        now = asyncio.get_running_loop().time()
        if messages:
            last_progress = now
        elif now - last_progress > reader.stall_timeout:
            raise KafkaError(f"reading {reader.topic} stalled before its end", topic=reader.topic)
        fresh = first_unseen(_scores(keyed(messages, job_id)), seen)
        if fresh:
            yield fresh


class ScoreTail:
    """Reads one job's score records from its partition while the job runs.

    A large job's results would otherwise all be read and decoded after its final status, which
    at thousands of examples per second is a visible share of the wall time; started at submit,
    only the last records are left by then. :meth:`finish` reads to the end of the partition and
    returns what :func:`read_scores` would (it falls back to that when records are missing), read
    as :class:`~dspex.client.results.EvaluatedScore`: it serves ``Client.evaluate`` only.

        tail = ScoreTail(settings, registry, job_id, partition, start).start()
        status = await follow_status(...)
        records = await tail.finish(status)
    """

    def __init__(
        self, settings: KafkaSettings, registry: TopicRegistry, job_id: str, partition: int, start: int | None
    ) -> None:
        self._settings, self._registry = settings, registry
        self._job_id, self._partition, self._start = job_id, partition, start
        self._records: list[ScoreRecord] = []
        self._finishing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> ScoreTail:
        self._task = asyncio.create_task(self._read(), name=f"dspex-score-tail-{self._job_id}")
        return self

    async def finish(self, status: Any) -> list[ScoreRecord]:
        """The job's de-duplicated records once ``status`` is terminal."""
        assert self._task is not None, "start() first"
        self._finishing.set()
        await self._task
        records = dedupe(self._records)
        if len(records) < _counted(status):
            return await read_scores(self._settings, self._registry, self._job_id, status=status)
        return records

    async def cancel(self) -> None:
        """Stop reading (the job's outcome is not wanted any more)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async with _reader(self._settings, self._registry.name("scores")) as (reader, run):
            await run(reader.assign, {self._partition: self._start})
            while not self._finishing.is_set():
                self._take(await run(reader.poll, _TAIL_POLL_S))
            self._take(await run(reader.read_to_end))

    def _take(self, messages: list[Message]) -> None:
        # an evaluation's records: what its EvaluationResult holds, not the trace or LM call log;
        # acyclic, so the collector would only walk them (see dspex.client._collector)
        with collector_paused():
            self._records.extend(_scores(keyed(messages, self._job_id), EvaluatedScore))


async def read_scores_of(
    settings: KafkaSettings, registry: TopicRegistry, jobs: Sequence[tuple[Follow, Any]]
) -> dict[str, list[ScoreRecord]]:
    """The de-duplicated score records of several jobs (each a Follow naming its scores partition
    and start, with its terminal status), read with one reader; a job whose partition holds fewer
    records than its status counted is read again by :func:`read_scores` (which scans)."""
    async with _reader(settings, registry.name("scores")) as (reader, run):
        await run(reader.assign, _earliest_starts([follow for follow, _ in jobs]))
        messages = await run(reader.read_to_end)
    found: dict[str, list[ScoreRecord]] = {}
    for follow, status in jobs:
        records = dedupe(_scores(keyed(messages, follow.job_id)))
        if len(records) < _counted(status):
            records = await read_scores(settings, registry, follow.job_id, status=status)
        found[follow.job_id] = records
    return found


def _counted(status: Any) -> int:
    """How many results the job's status says exist (fewer on its partition: read them elsewhere)."""
    return status.done if isinstance(status, JobStatus) else 0


def _start_offset(reader: PartitionReader, partition: int, status: Any) -> int | None:
    started = getattr(status, "started_at", None) or getattr(status, "updated_at", None)
    if started is None:
        return None
    return reader.offset_for_time(partition, int((started - _CLOCK_SLACK).timestamp() * 1000))


def _scores(
    values: Iterable[bytes | None], record_type: type[ScoreRecord] = ScoreRecord
) -> list[ScoreRecord]:
    records = []
    for value in values:
        if is_usage_report(value):  # a cancelled run's LM usage (the aggregator's), never a result
            continue
        try:
            records.append(decode(value, record_type))
        except SchemaError as exc:
            logger.warning("skipping an unreadable score record: %s", exc)
    return records


async def read_all_latest(
    settings: KafkaSettings, topic: str, decoder: Callable[[bytes], Any]
) -> dict[str, Any]:
    """``key -> latest decodable value`` of a whole compacted topic ({} when it does not exist)."""
    async with _reader(settings, topic) as (reader, run):
        try:
            count = await run(reader.partition_count)
        except TopicError:
            return {}
        await run(reader.assign, dict.fromkeys(range(count)))
        messages = await run(reader.read_to_end)
    return _latest(messages, decoder)


def _latest(messages: Iterable[Message], decoder: Callable[[bytes], Any]) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for message in messages:
        key, value = message.key(), message.value()
        if key is None:
            continue
        name = key.decode("utf-8", "replace")
        if value is None:
            latest.pop(name, None)
            continue
        try:
            latest[name] = decoder(value)
        except SchemaError as exc:
            logger.warning("skipping %s of %s: %s", name, message.topic(), exc)
    return latest


def decode_status(value: bytes) -> Any:
    """A status topic value (raises SchemaError)."""
    return decode(value, StatusMessage)


def decode_heartbeat(value: bytes) -> WorkerHeartbeat:
    """A workers topic value (raises SchemaError)."""
    return decode(value, WorkerHeartbeat)


def read_lag(admin: KafkaAdmin, registry: TopicRegistry) -> dict[str, GroupLag]:
    """Lag of each worker group (by worker kind) on the topic it consumes, from the admin API."""
    return {
        kind: admin.group_lag(registry.prefix + suffix, [registry.name(role)])  # type: ignore[arg-type]
        for kind, (suffix, role) in WORKER_GROUPS.items()
    }


class _reader:
    """``async with _reader(settings, topic) as (reader, run)``: a reader and its thread runner."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._async = AsyncPartitionReader(settings, topic)

    async def __aenter__(self) -> tuple[PartitionReader, Callable[..., Any]]:
        reader = await self._async.__aenter__()
        return reader, self._async.run

    async def __aexit__(self, *exc_info: object) -> None:
        await self._async.__aexit__(*exc_info)
