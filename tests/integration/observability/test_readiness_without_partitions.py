"""A consumer-group member with no partition is still ready (/readyz of a worker).

More replicas than partitions is what a Deployment scaled by hand (or KEDA at its cap) gives: the
extra member holds nothing, but it is steady in the group and takes over when another leaves, so a
rollout must not wait on it. Two real members of one group on a one-partition topic, real broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Message

from dspex.observability.health import consumer_readiness
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.consumer import ConsumerOptions, ConsumerRuntime
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def ignore(message: Message, value: Any) -> None:
    """Nothing is produced to the topic; a handler is required all the same."""


async def test_the_member_without_a_partition_is_ready_too(
    kafka_bootstrap: str, topic_prefix: str, unique_group: Callable[[str], str]
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, client_id="dspex-tests")
    registry = TopicRegistry(topic_prefix)
    ensure_topics(settings, registry)
    topic = registry.name("workers")  # one partition
    options = ConsumerOptions(
        group_id=unique_group("ready"), topics=(topic,), dlq_topic=registry.name("dlq"), fast_groups=True
    )
    async with AsyncProducer(settings) as producer:
        members = [ConsumerRuntime(settings, options, handler=ignore, producer=producer) for _ in range(2)]
        async with members[0], members[1]:
            deadline = time.monotonic() + 60
            reasons = [consumer_readiness(m, options.group_id) for m in members]
            while any(reasons) and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                reasons = [consumer_readiness(m, options.group_id) for m in members]
            assert reasons == [None, None]
            assigned = sorted(len(member.assignment()) for member in members)
            assert assigned == [0, 1]
            idle = next(member for member in members if not member.assignment())
            assert idle.in_group
