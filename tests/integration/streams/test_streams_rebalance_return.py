"""Partitions taken from a member while paused, and later given back to it, are read again.

librdkafka keeps a partition's pause across a revoke (or a lost session) and a later assign to
the same member; the runtime forgets the pause of the partitions it gives up. So a partition
paused by the high watermark when the group took it away must be resumed when it comes back,
else nothing on it is ever delivered (what a broker restart under load did to the predictors).

Scenario: member a fills its in-flight bound (every partition paused), b joins and takes half of
them, a finishes its held work (it resumes only what it kept), b leaves with its share
unfinished, and those partitions return to a: every message must still be handled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from confluent_kafka import Message
from streams_kafka import produce_all, wait_until

from dspex.streams.config import KafkaSettings
from dspex.streams.consumer import ConsumerOptions, ConsumerRuntime
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]

MESSAGES = 2_000
PARTITIONS = 8
MAX_IN_FLIGHT = 64
SMALL_BATCHES = {"batch.num.messages": 4, "linger.ms": 0}
SMALL_FETCHES = {"max.partition.fetch.bytes": 256}


async def test_partitions_revoked_while_paused_resume_when_they_return(
    settings: KafkaSettings, registry: TopicRegistry, unique_group: Callable[[str], str]
) -> None:
    tasks, dlq = registry.name("tasks"), registry.name("dlq")
    group = unique_group("return")
    finished: set[tuple[int, int]] = set()
    gate_a, gate_b = asyncio.Event(), asyncio.Event()  # b's gate never opens: it leaves with work held

    async def handle(gate: asyncio.Event, message: Message) -> None:
        await gate.wait()
        finished.add((int(message.partition() or 0), int(message.offset() or 0)))

    async with AsyncProducer(settings, config=SMALL_BATCHES) as producer:
        inputs = [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(MESSAGES)]
        await produce_all(producer, tasks, inputs)

        def member(gate: asyncio.Event, name: str) -> ConsumerRuntime:
            async def handler(message: Message, value: bytes) -> None:
                await handle(gate, message)

            return ConsumerRuntime(
                settings,
                ConsumerOptions(
                    group_id=group,
                    topics=[tasks],
                    dlq_topic=dlq,
                    max_in_flight=MAX_IN_FLIGHT,
                    low_watermark=0,
                    drain_timeout=1.0,
                    fast_groups=True,
                    worker_id=name,
                    config=SMALL_FETCHES,
                ),
                handler=handler,
                producer=producer,
            )

        a = member(gate_a, "a")
        async with a:
            await wait_until(
                lambda: len(a.assignment()) == PARTITIONS and a.paused_partitions() == a.assignment(),
                60,
                "member a full, every partition paused",
            )
            b = member(gate_b, "b")
            async with b:
                await wait_until(
                    lambda: bool(b.assignment()) and len(a.assignment()) + len(b.assignment()) == PARTITIONS,
                    60,
                    "the partitions split between a and b",
                )
                given_back = b.assignment()
                gate_a.set()  # a finishes what it holds and resumes the partitions it kept
                await wait_until(lambda: a.stats.resumes >= 1, 30, "member a to resume")
                await wait_until(lambda: b.stats.received > 0, 30, "member b to hold messages")
            # b left without finishing anything: its partitions come back to a, unpaused.
            await wait_until(lambda: a.assignment() >= given_back, 60, "b's partitions back at a")
            await wait_until(lambda: len(finished) == MESSAGES, 90, f"all {MESSAGES} messages handled")
    assert {partition for partition, _ in finished} == set(range(PARTITIONS))
