"""Stopping drains within the deadline: finished work is committed, unfinished work is not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Message
from streams_kafka import committed_and_end, wait_until

from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.consumer import ConsumerOptions, ConsumerRuntime
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def test_stop_commits_up_to_the_first_unfinished_message_only(
    settings: KafkaSettings, registry: TopicRegistry, unique_group: Callable[[str], str]
) -> None:
    topic, group = registry.name("tasks"), unique_group("drain")
    stuck = 12
    finished: set[int] = set()
    never = asyncio.Event()

    async def handle(message: Message, value: bytes) -> None:
        offset = int(message.offset() or 0)
        if offset == stuck:
            await never.wait()  # a handler that will not finish in time
        finished.add(offset)

    async with AsyncProducer(settings) as producer:
        # Everything on one partition, so that offsets are contiguous.
        deliveries = [await producer.produce(topic, f"v{i}".encode(), partition=0) for i in range(40)]
        assert [d.offset for d in deliveries] == list(range(40))
        runtime = ConsumerRuntime(
            settings,
            ConsumerOptions(
                group_id=group,
                topics=[topic],
                dlq_topic=registry.name("dlq"),
                drain_timeout=1.0,
                fast_groups=True,
            ),
            handler=handle,
            producer=producer,
        )
        async with runtime:
            await wait_until(lambda: len(finished) == 39, 30, "all but the stuck message")
            started = time.monotonic()
        stop_s = time.monotonic() - started

    committed, _ = committed_and_end(KafkaAdmin(settings), group, topic)
    assert committed[(topic, 0)] == stuck
    assert runtime.stats.cancelled == 1 and runtime.stats.handled == 39
    assert stop_s < 5, f"stopping took {stop_s:.1f} s with a 1 s drain deadline"
