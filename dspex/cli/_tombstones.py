"""Reading compacted topics for `dspex purge`: whether a key's latest record is a tombstone, and
which provider-batch answers (``lm-responses``) a job's LM requests got.

A single key is read with :func:`dspex.cli._ids.values_keyed`: the one partition it hashes to, from
its first offset to its end, without a consumer group. Finding a job's answers reads two topics
whole, headers only, to their end at the time of asking:

- ``lm-requests``: every request a batch-mode task parked carries its job in the ``dspex-job-id``
  header (and its request hash as key), for as long as that topic keeps it (its retention);
- ``lm-responses`` (key: request hash): an answer carries the ``dspex-job-id`` of the job that asked
  first; answers written before that header existed carry none, and are found through
  ``lm-requests`` only.

An answer is the provider's reply to one request body: another job that sent the very same body got
the same record. It is still deleted with the purged job (a cache entry: that other job, if run
again, asks the provider once more); the count of such answers is reported.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from dspex.cli._ids import values_keyed
from dspex.errors import KafkaError
from dspex.schemas.headers import ids_from_headers
from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.fetch import consume_ready

__all__ = ["JobAnswers", "job_answers", "latest_is_tombstone"]

logger = logging.getLogger(__name__)


def latest_is_tombstone(settings: KafkaSettings, topic: str, key: str, *, timeout: float = 10.0) -> bool:
    """True when the last record keyed ``key`` on ``topic`` has no value (False: a value, or no
    record at all). KafkaError when the broker does not answer."""
    latest = False
    with values_keyed(settings, topic, key, timeout=timeout) as values:
        for value in values:
            latest = value is None
    return latest


@dataclass(frozen=True)
class JobAnswers:
    """The ``lm-responses`` keys (request hashes) to tombstone for some jobs; ``shared``: those of
    them another job's requests asked too."""

    keys: tuple[str, ...]
    shared: tuple[str, ...]


def job_answers(
    settings: KafkaSettings, requests_topic: str, answers_topic: str, job_ids: Collection[str]
) -> JobAnswers:
    """The live answers (latest record not a tombstone) that ``job_ids`` asked for or are named in.
    KafkaError when the broker does not answer or a topic cannot be read to its end."""
    wanted = set(job_ids)
    asked: set[str] = set()
    asked_by_others: set[str] = set()
    for key, job_id, _ in _scan(settings, requests_topic):
        (asked if job_id in wanted else asked_by_others).add(key)
    live: dict[str, str | None] = {}  # request hash -> job named by its latest answer
    for key, job_id, tombstone in _scan(settings, answers_topic):
        if tombstone:
            live.pop(key, None)
        else:
            live[key] = job_id
    keys = sorted(key for key, job_id in live.items() if key in asked or job_id in wanted)
    shared = [key for key in keys if key in asked_by_others or live[key] not in (*wanted, None)]
    return JobAnswers(keys=tuple(keys), shared=tuple(shared))


def _scan(
    settings: KafkaSettings, topic: str, timeout: float = 10.0
) -> Iterator[tuple[str, str | None, bool]]:
    """``(key, job id header, is tombstone)`` of every keyed record of ``topic``, oldest first per
    partition, up to each partition's end at the time of asking (a missing topic has none)."""
    consumer = Consumer(client_config(settings, logger, **{"group.id": f"dspex-cli-{uuid.uuid4().hex}"}))
    try:
        yield from _records(consumer, topic, timeout)
    except KafkaException as exc:
        raise KafkaError(f"could not read {topic}: {exc}", topic=topic) from exc
    finally:
        consumer.close()


def _records(consumer: Consumer, topic: str, timeout: float) -> Iterator[tuple[str, str | None, bool]]:
    found = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if found is None or found.error is not None:
        return
    ends: dict[int, int] = {}
    starts = []
    for partition in found.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        if high > low:
            ends[partition] = high
            starts.append(TopicPartition(topic, partition, low))
    if not ends:
        return
    consumer.assign(starts)
    deadline = time.monotonic() + max(timeout, 60.0)
    while ends:
        if time.monotonic() > deadline:
            raise KafkaError(f"could not read {topic} to its end in time", topic=topic)
        for message in consume_ready(consumer, 1000, 0.2):
            key = message.key()
            if message.error() is None and key is not None:
                yield key.decode("utf-8", "replace"), _job_header(message), message.value() is None
        # the position, not the last offset seen: compaction or a control record may leave a gap
        for position in consumer.position([TopicPartition(topic, p) for p in ends]):
            if position.offset >= ends[position.partition]:
                ends.pop(position.partition)


def _job_header(message: Message) -> str | None:
    return ids_from_headers(message.headers()).job_id
