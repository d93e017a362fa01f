"""Helpers of the streams integration tests: produce inputs, read topics back, wait on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer, Delivery
from dspex.streams.serde import RawHeaders


@dataclass(frozen=True)
class Seen:
    """One record read back from a topic."""

    key: bytes | None
    value: bytes | None
    headers: RawHeaders
    partition: int
    offset: int


async def produce_all(
    producer: AsyncProducer,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None, RawHeaders | None]],
) -> list[Delivery]:
    """Queue every (key, value, headers) in order, then wait for all acknowledgements."""
    pending = [await producer.send(topic, value, key=key, headers=headers) for key, value, headers in records]
    return list(await asyncio.gather(*pending))


class TopicTail:
    """Reads a whole topic from the beginning, without a group, and keeps reading new records."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.records: list[Seen] = []
        self._consumer = Consumer(
            {**settings.confluent(), "group.id": "tail-unused", "enable.auto.commit": False}
        )
        metadata = self._consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def poll(self, timeout: float = 0.2) -> list[Seen]:
        """Read what arrived; returns the new records (also appended to ``records``)."""
        fresh = []
        for message in self._consumer.consume(1000, timeout):
            if message.error() is None:
                fresh.append(
                    Seen(
                        message.key(),
                        message.value(),
                        list(message.headers() or []),
                        int(message.partition() or 0),
                        int(message.offset() or 0),
                    )
                )
        self.records.extend(fresh)
        return fresh

    def read_until(self, done: Callable[[list[Seen]], bool], timeout: float) -> list[Seen]:
        """Poll until ``done(records)`` holds; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.records)} records after {timeout} s")
            self.poll()
        return self.records

    def close(self) -> None:
        self._consumer.close()


def read_topic(settings: KafkaSettings, topic: str, count: int, timeout: float = 30.0) -> list[Seen]:
    """At least ``count`` records of ``topic`` (blocking)."""
    tail = TopicTail(settings, topic)
    try:
        return tail.read_until(lambda records: len(records) >= count, timeout)
    finally:
        tail.close()


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Re-check ``condition`` every 10 ms; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_until_async(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """:func:`wait_until` for a coroutine condition (checked every 100 ms)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def committed_and_end(admin: KafkaAdmin, group: str, topic: str) -> tuple[dict, dict]:
    """The group's committed offsets and the end offsets of every partition of ``topic``."""
    partitions = [(topic, p) for p in range(admin.partition_counts([topic])[topic])]
    return admin.committed(group, partitions), admin.end_offsets(partitions)


async def fully_committed(admin: KafkaAdmin, group: str, topic: str) -> bool:
    """Whether the group committed exactly the end offset of every partition of ``topic``."""
    committed, end = await asyncio.to_thread(committed_and_end, admin, group, topic)
    return all(committed.get(tp, 0) == offset for tp, offset in end.items())
