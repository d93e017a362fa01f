"""10,000 messages through the consumer runtime: handled once each, committed to the end,
with backpressure pausing and resuming the partitions on the way."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Message
from streams_kafka import fully_committed, produce_all, read_topic, wait_until, wait_until_async

from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.consumer import ConsumerOptions, ConsumerRuntime
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

MESSAGES = 10_000
MAX_IN_FLIGHT = 64


async def test_round_trip_every_message_once_committed_to_the_end(
    settings: KafkaSettings, registry: TopicRegistry, unique_group: Callable[[str], str]
) -> None:
    tasks, outputs = registry.name("tasks"), registry.name("predictions")
    group = unique_group("round-trip")
    rng = random.Random(11)
    handled: Counter[bytes] = Counter()
    in_flight_now = 0
    in_flight_peak = 0

    async with AsyncProducer(settings) as producer:
        inputs = [(f"key-{i}".encode(), f"value-{i}".encode(), None) for i in range(MESSAGES)]
        await produce_all(producer, tasks, inputs)

        async def handle(message: Message, value: bytes) -> None:
            nonlocal in_flight_now, in_flight_peak
            in_flight_now += 1
            in_flight_peak = max(in_flight_peak, in_flight_now)
            try:
                await asyncio.sleep(rng.uniform(0, 0.020))
                await producer.produce(outputs, b"out-" + value, key=message.key())
                handled[value] += 1
            finally:
                in_flight_now -= 1

        runtime = ConsumerRuntime(
            settings,
            ConsumerOptions(
                group_id=group,
                topics=[tasks],
                dlq_topic=registry.name("dlq"),
                max_in_flight=MAX_IN_FLIGHT,
                fast_groups=True,
            ),
            handler=handle,
            producer=producer,
        )
        started = time.monotonic()
        async with runtime:
            await wait_until(lambda: len(handled) == MESSAGES, 120, "every message handled")
            elapsed = time.monotonic() - started
            # Periodic commits alone must reach the end while the runtime still runs.
            admin = KafkaAdmin(settings)
            await wait_until_async(lambda: fully_committed(admin, group, tasks), 10, "commits at the end")
        print(f"\n{MESSAGES} messages in {elapsed:.1f} s; stats: {runtime.stats}")

    stats = runtime.stats
    assert set(handled.values()) == {1}, "a message was handled more than once"
    assert stats.handled == MESSAGES and stats.received == MESSAGES
    assert stats.dead_lettered == 0 and stats.handler_errors == 0
    assert stats.pauses >= 1 and stats.resumes >= 1
    assert in_flight_peak == MAX_IN_FLIGHT == stats.max_in_flight_seen
    assert stats.commits >= 1 and stats.commit_failures == 0
    produced = await asyncio.to_thread(read_topic, settings, outputs, MESSAGES)
    assert sorted(record.value or b"" for record in produced) == sorted(b"out-" + v for _, v, _ in inputs)
