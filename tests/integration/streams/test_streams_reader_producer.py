"""The compacted-topic reader and the producer's guarantees against a real broker."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import pytest
from streams_kafka import produce_all, read_topic

from dspex.errors import TopicError
from dspex.schemas import Message as WireMessage
from dspex.schemas import encode
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer, _LibrdkafkaLog
from dspex.streams.reader import CompactedReader
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


class Spec(WireMessage):
    name: str
    version: int


async def test_reader_keeps_the_latest_value_per_key_and_follows(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    topic = registry.name("candidates")
    async with AsyncProducer(settings) as producer:
        await produce_all(
            producer,
            topic,
            [
                (b"a", encode(Spec(name="a", version=1)), None),
                (b"b", encode(Spec(name="b", version=1)), None),
                (b"a", encode(Spec(name="a", version=2)), None),
                (b"gone", encode(Spec(name="gone", version=1)), None),
                (b"gone", None, None),  # tombstone
                (b"bad", b"not a spec", None),
            ],
        )
        async with CompactedReader(settings, topic, decoder=Spec) as reader:
            await reader.wait_caught_up(timeout=20)
            assert reader.snapshot() == {"a": Spec(name="a", version=2), "b": Spec(name="b", version=1)}
            assert reader.skipped == 1
            with pytest.raises(TimeoutError):
                await reader.wait_for("late", timeout=0.3)

            waiting = asyncio.create_task(reader.wait_for("late", timeout=20))
            await producer.produce(topic, encode(Spec(name="late", version=7)), key=b"late")
            assert await waiting == Spec(name="late", version=7)
            assert reader.get("late") == Spec(name="late", version=7) and len(reader) == 3


async def test_reader_of_a_missing_topic_says_so(settings: KafkaSettings, topic_prefix: str) -> None:
    reader: CompactedReader[bytes] = CompactedReader(settings, topic_prefix + "nothing", metadata_timeout=5)
    with pytest.raises(TopicError, match="does not exist"):
        await reader.start()
    await reader.aclose()


async def test_producer_waits_when_its_queue_is_full_instead_of_dropping(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    topic = registry.name("predictions")
    tiny_queue = {"queue.buffering.max.messages": 20}
    async with AsyncProducer(settings, config=tiny_queue) as producer:
        records = [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(2_000)]
        deliveries = await produce_all(producer, topic, records)
        assert producer.stats.queue_full_waits > 0, "the queue never filled: the test proves nothing"
        assert producer.stats.delivered == 2_000 and producer.stats.failed == 0
    assert len({(d.partition, d.offset) for d in deliveries}) == 2_000
    seen = await asyncio.to_thread(read_topic, settings, topic, 2_000)
    assert sorted(r.value or b"" for r in seen) == sorted(v for _, v, _ in records)


async def test_a_3_mb_value_round_trips_compressed(settings: KafkaSettings, registry: TopicRegistry) -> None:
    value = os.urandom(1024 * 1024) * 3  # 3 MB, compressible (repeats) but not trivially
    topic = registry.name("tasks")
    async with AsyncProducer(settings) as producer:
        delivery = await producer.produce(topic, value, key=b"big")
    [record] = await asyncio.to_thread(read_topic, settings, topic, 1)
    assert record.value == value and record.partition == delivery.partition


async def test_delivery_reports_settle_in_order_and_in_batches(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    topic = registry.name("scores")
    hand_overs = 0
    loop = asyncio.get_running_loop()
    original = loop.call_soon_threadsafe

    def counting(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal hand_overs
        hand_overs += 1
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        async with AsyncProducer(settings) as producer:
            futures = [await producer.send(topic, f"v{i}".encode(), key=b"one-key") for i in range(3_000)]
            deliveries = await asyncio.gather(*futures)
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
    # one key, one partition: offsets follow the order of the sends, each future got its own record
    assert len({d.partition for d in deliveries}) == 1
    assert [d.offset for d in deliveries] == list(range(deliveries[0].offset, deliveries[0].offset + 3_000))
    assert 0 < hand_overs < 3_000 // 10, f"{hand_overs} wake-ups for 3,000 reports: not batched"


async def test_consume_ready_returns_once_records_are_there_not_after_its_timeout(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from dspex.streams.fetch import consume_ready

    topic = registry.name("status")
    async with AsyncProducer(settings) as producer:
        delivered = [await producer.produce(topic, f"v{i}".encode(), key=b"k") for i in range(3)]
    consumer = Consumer(
        {**settings.confluent(), "group.id": f"{registry.prefix}ready", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, delivered[0].partition, OFFSET_BEGINNING)])
        started = time.monotonic()
        found: list[bytes] = []
        while len(found) < 3 and time.monotonic() - started < 60:
            found += [m.value() for m in consume_ready(consumer, 1000, 20.0) if m.error() is None]
        took = time.monotonic() - started
    finally:
        consumer.close()
    assert found == [b"v0", b"v1", b"v2"]
    # consume(1000, 20.0) would have held the records until its 20 s ran out
    assert took < 15.0, f"{took:.1f} s for 3 records already on the topic"


async def test_a_producer_that_lost_a_partition_leader_is_replaced_and_its_queued_records_resent(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    # librdkafka issue 5430: after a produce response naming leader -1, a partition never delivers
    # again. Its log line makes the producer replace itself; the long linger keeps the records
    # queued (not in flight) when that happens, as a stuck partition's records are.
    topic = registry.name("predictions")
    async with AsyncProducer(settings, config={"linger.ms": 2_000}) as producer:
        records = [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(50)]
        pending = [await producer.send(topic, value, key=key) for key, value, _ in records]
        librdkafka_log = producer._config["logger"]
        librdkafka_log.log(
            logging.WARNING,
            "%s [%s] %s",
            "METADATAUPDATE",
            "dspex#producer-1",
            f"[thrd:main]: Partition {topic}(abc)[3]: new leader-1 not found in cache",
        )
        deliveries = await asyncio.wait_for(asyncio.gather(*pending), timeout=30)
        assert producer.stats.replaced == 1
        assert producer.stats.resent == 50 and producer.stats.delivered == 50 and producer.stats.failed == 0
        # len() also counts librdkafka events not yet served (a log line can land after the last
        # delivery), so the check that nothing is left unacknowledged serves them first
        assert await producer.flush(10) == 0
    assert len({(d.partition, d.offset) for d in deliveries}) == 50
    admin = KafkaAdmin(settings)
    partitions = [(topic, p) for p in range(admin.partition_counts([topic])[topic])]
    assert sum(admin.end_offsets(partitions).values()) == 50  # each record once, none twice
    seen = await asyncio.to_thread(read_topic, settings, topic, 50)
    assert sorted(r.value or b"" for r in seen) == sorted(v for _, v, _ in records)


def test_only_the_lost_leader_line_asks_for_a_new_producer() -> None:
    lost = threading.Event()
    log = _LibrdkafkaLog(lost)
    log.log(
        logging.WARNING, "%s [%s] %s", "METADATAUPDATE", "p", "Partition t[0]: new leader2 not found in cache"
    )
    log.log(logging.ERROR, "%s [%s] %s", "FAIL", "p", "Connect to ipv4#127.0.0.1:1 failed")
    assert not lost.is_set()
    log.log(
        logging.WARNING,
        "%s [%s] %s",
        "METADATAUPDATE",
        "p",
        "Partition t[0]: new leader-1 not found in cache",
    )
    assert lost.is_set()
