"""One evaluation's stored records, read on demand for the per-example pages: its job record (jobs
topic: dataset, input keys) and its score records (scores topic: outputs, score, error, trace, usage,
latency, worker).

An example's LM calls (``lm_call_log``, the bulk of a score record) are kept apart as their JSON
text and read back for the one example opened (:meth:`JobRecords.call_log`): a cached job holds its
rows as objects and its prompts as compact bytes.

Both topics are keyed by job id and co-partitioned, so a job's records sit in one partition of each;
it is read from a little before the job started (by record time) to the end it has now, keeping the
job's records only. Calls block (librdkafka): the app runs them on a thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as RawKafkaError
from pydantic import TypeAdapter

from dspex.errors import KafkaError, SchemaError, TopicError
from dspex.schemas import decode
from dspex.schemas.jobs import EvalJob, JobMessage
from dspex.schemas.lm_calls import LMCallRecord
from dspex.schemas.results import ScoreRecord, is_usage_report
from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.fetch import consume_ready
from dspex.streams.partitioner import partition_for
from dspex.streams.topics import TopicRegistry

__all__ = ["JobRecords", "key_values", "read_job_records"]

_log = logging.getLogger("dspex.streams.librdkafka.dashboard")

CLOCK_SLACK = timedelta(minutes=10)
"""Read from this long before the job's start: writers' clocks and record times differ a little."""
_BATCH = 1000
_CALLS: TypeAdapter[list[LMCallRecord]] = TypeAdapter(list[LMCallRecord])


@dataclass
class JobRecords:
    """What the topics hold about one evaluation: its job record (None: not found) and its score
    records, the first per candidate and example (a redelivered task's repeat is not counted).

    ``scores`` hold no ``lm_call_log``: :meth:`add` keeps it apart (see the module docs)."""

    job: EvalJob | None = None
    scores: list[ScoreRecord] = field(default_factory=list)
    lm_calls: dict[tuple[str, int], bytes] = field(default_factory=dict)

    def add(self, record: ScoreRecord) -> None:
        """Keep ``record``, its LM calls as JSON text beside it."""
        if record.lm_call_log:
            self.lm_calls[(record.candidate_id, record.example_index)] = _CALLS.dump_json(record.lm_call_log)
            record = record.model_copy(update={"lm_call_log": None})
        self.scores.append(record)

    def call_log(self, record: ScoreRecord) -> list[LMCallRecord]:
        """The LM calls of ``record``'s example (empty when none were recorded)."""
        kept = self.lm_calls.get((record.candidate_id, record.example_index))
        if kept is None:
            return list(record.lm_call_log or [])
        return _CALLS.validate_json(kept)


def read_job_records(
    settings: KafkaSettings,
    registry: TopicRegistry,
    job_id: str,
    started_at: datetime | None,
    timeout: float = 10.0,
) -> JobRecords:
    """Read ``job_id``'s job record and score records (blocking)."""
    since = started_at - CLOCK_SLACK if started_at is not None else None
    records = JobRecords()
    for value in key_values(settings, registry.name("jobs"), job_id, since, timeout):
        try:
            message = decode(value, JobMessage)
        except SchemaError:
            continue
        if isinstance(message, EvalJob):
            records.job = message
    seen: set[tuple[str, int]] = set()
    for value in key_values(settings, registry.name("scores"), job_id, since, timeout):
        if is_usage_report(value):
            continue
        try:
            record = decode(value, ScoreRecord)
        except SchemaError:
            continue
        if (record.candidate_id, record.example_index) not in seen:
            seen.add((record.candidate_id, record.example_index))
            records.add(record)
    return records


def key_values(
    settings: KafkaSettings, topic: str, key: str, since: datetime | None, timeout: float
) -> Iterator[bytes]:
    """The values of ``key``'s records on ``topic``, from ``since`` to the end as it is now."""
    config = client_config(
        settings,
        _log,
        **{
            "group.id": f"dspex-dashboard-{uuid.uuid4().hex}",  # assign() only: never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        },
    )
    consumer = Consumer(config)
    try:
        yield from _read(consumer, topic, key, since, timeout)
    except KafkaException as exc:
        raise KafkaError(f"could not read {topic}: {exc}", topic=topic) from exc
    finally:
        consumer.close()


def _read(
    consumer: Consumer, topic: str, key: str, since: datetime | None, timeout: float
) -> Iterator[bytes]:
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise TopicError(f"topic {topic} does not exist", topic=topic)
    partition = partition_for(key, len(metadata.partitions))
    _, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
    start = OFFSET_BEGINNING
    if since is not None:
        stamp = TopicPartition(topic, partition, int(since.timestamp() * 1000))
        found = consumer.offsets_for_times([stamp], timeout=timeout)[0].offset
        start = found if found >= 0 else end
    consumer.assign([TopicPartition(topic, partition, start)])
    raw_key = key.encode("utf-8")
    position = start if start >= 0 else 0
    deadline = time.monotonic() + timeout
    while position < end:
        if time.monotonic() > deadline:
            raise KafkaError(f"reading {topic} partition {partition} took over {timeout} s", topic=topic)
        for message in consume_ready(consumer, _BATCH, 0.5):
            error = message.error()
            if error is not None:
                if error.code() == RawKafkaError._PARTITION_EOF:
                    return
                continue
            position = (message.offset() or 0) + 1
            deadline = time.monotonic() + timeout  # a long partition is fine while it moves
            value = message.value()
            if message.key() == raw_key and value is not None:
                yield value
