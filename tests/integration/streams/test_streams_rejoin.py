"""A member replaced by a new one (what the runtime does when it is stuck out of its group) loses nothing.

librdkafka's stuck-member bugs cannot be provoked on demand, so the replacement is requested
directly, halfway through the input, while handlers are held in flight and partitions paused: every
message is still handled and committed, the group ends with the new member only. The
decision to replace (from librdkafka's statistics) is tested in tests/unit/streams/test_streams_flow.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient
from streams_kafka import produce_all, wait_until, wait_until_async

from dspex.streams.admin import group_lag
from dspex.streams.config import KafkaSettings
from dspex.streams.consumer import ConsumerOptions, ConsumerRuntime
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

MESSAGES = 1_000
MAX_IN_FLIGHT = 32


async def test_a_replaced_member_hands_over_every_message(
    settings: KafkaSettings, registry: TopicRegistry, unique_group: Callable[[str], str]
) -> None:
    tasks, dlq = registry.name("tasks"), registry.name("dlq")
    group = unique_group("rejoin")
    handled: set[bytes] = set()
    replaced = asyncio.Event()

    async def handler(message: Message, value: bytes) -> None:
        if len(handled) >= MESSAGES // 2:
            await replaced.wait()  # the second half is held in flight until the member was replaced
        handled.add(value)

    async with AsyncProducer(settings) as producer:
        await produce_all(
            producer, tasks, [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(MESSAGES)]
        )
        runtime = ConsumerRuntime(
            settings,
            ConsumerOptions(
                group_id=group,
                topics=[tasks],
                dlq_topic=dlq,
                max_in_flight=MAX_IN_FLIGHT,
                fast_groups=True,
            ),
            handler=handler,
            producer=producer,
        )
        async with runtime:
            await wait_until(lambda: runtime.outstanding >= MAX_IN_FLIGHT, 60, "half handled, the rest held")
            runtime.request_rejoin()
            await wait_until(lambda: runtime.stats.rejoins == 1, 30, "the member replaced")
            replaced.set()
            await wait_until(lambda: len(handled) == MESSAGES, 90, "every message handled after the rejoin")
            assert runtime.assignment(), "the new member owns partitions"
            await wait_until_async(lambda: _lag(settings, group, tasks), 30, "every offset committed")
            await wait_until_async(lambda: _one_member(settings, group), 30, "the replaced member gone")

    assert handled == {f"v{i}".encode() for i in range(MESSAGES)}


async def _lag(settings: KafkaSettings, group: str, topic: str) -> bool:
    return (await asyncio.to_thread(group_lag, settings, group, [topic])).total == 0


async def _one_member(settings: KafkaSettings, group: str) -> bool:
    return len(await asyncio.to_thread(_members, settings, group)) == 1


def _members(settings: KafkaSettings, group: str) -> list[str]:
    admin = AdminClient(settings.confluent())
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    return [member.member_id for member in future.result(timeout=15).members]
