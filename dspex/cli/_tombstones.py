"""Whether a compacted topic's latest record for a key is a tombstone: a job that was purged.

Read from the one partition the key hashes to (every dspex producer places keys there), from its
first offset to its end, without a consumer group.
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from dspex.errors import KafkaError
from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.fetch import consume_ready
from dspex.streams.partitioner import partition_for

__all__ = ["latest_is_tombstone"]

logger = logging.getLogger(__name__)


def latest_is_tombstone(settings: KafkaSettings, topic: str, key: str, *, timeout: float = 10.0) -> bool:
    """True when the last record keyed ``key`` on ``topic`` has no value (False: a value, or no
    record at all). KafkaError when the broker does not answer."""
    consumer = Consumer(client_config(settings, logger, **{"group.id": f"dspex-cli-{uuid.uuid4().hex}"}))
    try:
        return _latest_is_tombstone(consumer, topic, key.encode("utf-8"), timeout)
    except KafkaException as exc:
        raise KafkaError(f"could not read {topic}: {exc}", topic=topic) from exc
    finally:
        consumer.close()


def _latest_is_tombstone(consumer: Consumer, topic: str, key: bytes, timeout: float) -> bool:
    found = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return False
    where = TopicPartition(topic, partition_for(key, len(found.partitions)))
    low, high = consumer.get_watermark_offsets(where, timeout=timeout)
    if high <= low:
        return False
    consumer.assign([TopicPartition(topic, where.partition, low)])
    latest: bool | None = None  # None: no record with the key yet
    deadline = time.monotonic() + max(timeout, 30.0)
    while time.monotonic() < deadline:
        for message in consume_ready(consumer, 1000, 0.2):
            if message.error() is not None:
                continue
            if message.key() == key:
                latest = message.value() is None
            if int(message.offset() or 0) >= high - 1:
                return bool(latest)
    raise KafkaError(f"reading {topic} to its end took too long", topic=topic)
