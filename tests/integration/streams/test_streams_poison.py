"""Messages that cannot be processed go to the DLQ with everything needed to account for them,
and the consumer goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from confluent_kafka import Message
from streams_kafka import fully_committed, produce_all, read_topic, wait_until, wait_until_async

from dspex.errors import PoisonMessageError
from dspex.schemas import HEADER_EXAMPLE_INDEX, HEADER_JOB_ID, DeadLetter, decode, encode
from dspex.schemas import Message as WireMessage
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.consumer import ConsumerOptions, ConsumerRuntime
from dspex.streams.producer import AsyncProducer, Delivery
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


class Item(WireMessage):
    """A stand-in message model of this test."""

    n: int
    text: str


MALFORMED: dict[int, bytes | None] = {
    7: b"this is not json",
    23: b'{"schema_version": "1.0", "n": "seven", "text": "x"}',  # wrong type
    41: b'{"schema_version": "9.0", "n": 41, "text": "x"}',  # unknown major version
    66: b"\xff\xfe\x00 not utf-8",
    90: None,  # no value at all
}
EXPECTED_REASONS = {
    7: "undecodable",
    23: "schema_invalid",
    41: "unsupported_version",
    66: "undecodable",
    90: "undecodable",
}


def headers_of(i: int) -> list[tuple[str, bytes | None]]:
    return [(HEADER_JOB_ID, b"job-poison"), (HEADER_EXAMPLE_INDEX, str(i).encode()), ("trace", b"\x00\x01")]


def runtime_for(
    settings: KafkaSettings,
    registry: TopicRegistry,
    group: str,
    producer: AsyncProducer,
    handler: Callable,
) -> ConsumerRuntime:
    return ConsumerRuntime(
        settings,
        ConsumerOptions(
            group_id=group,
            topics=[registry.name("tasks")],
            dlq_topic=registry.name("dlq"),
            max_in_flight=16,
            fast_groups=True,
            worker_id="poison-test",
        ),
        handler=handler,
        decoder=Item,
        producer=producer,
    )


async def test_malformed_messages_are_dead_lettered_and_the_consumer_goes_on(
    settings: KafkaSettings, registry: TopicRegistry, unique_group: Callable[[str], str]
) -> None:
    tasks, outputs, dlq = registry.name("tasks"), registry.name("predictions"), registry.name("dlq")
    group = unique_group("poison")
    valid = 100
    records: list[tuple[bytes | None, bytes | None, list]] = []
    for i in range(valid + len(MALFORMED)):
        value = MALFORMED[i] if i in MALFORMED else encode(Item(n=i, text=f"item {i}"))
        records.append((f"key-{i}".encode(), value, headers_of(i)))
    handled: list[int] = []

    async with AsyncProducer(settings) as producer:
        deliveries = await produce_all(producer, tasks, records)

        async def handle(message: Message, item: Item) -> None:
            await producer.produce(outputs, encode(item), key=message.key())
            handled.append(item.n)

        runtime = runtime_for(settings, registry, group, producer, handle)
        async with runtime:
            await wait_until(
                lambda: len(handled) == valid and runtime.stats.dead_lettered == len(MALFORMED),
                30,
                "100 handled and 5 dead-lettered",
            )
            # Still consuming: one more valid message is handled.
            extra = encode(Item(n=1000, text="after the poison"))
            await producer.produce(tasks, extra, key=b"key-extra")
            await wait_until(lambda: 1000 in handled, 30, "the message sent after the poison")
            admin = KafkaAdmin(settings)
            await wait_until_async(lambda: fully_committed(admin, group, tasks), 10, "commits at the end")

    assert sorted(handled) == [*sorted(set(range(valid + len(MALFORMED))) - set(MALFORMED)), 1000]
    assert runtime.stats.handler_errors == 0
    assert len(await asyncio.to_thread(read_topic, settings, outputs, valid + 1)) == valid + 1
    letters = await asyncio.to_thread(read_topic, settings, dlq, len(MALFORMED))
    assert len(letters) == len(MALFORMED)
    by_index = {}
    for record in letters:
        letter = decode(record.value, DeadLetter)
        assert letter.example_index is not None
        by_index[letter.example_index] = (letter, record)
    assert set(by_index) == set(MALFORMED)
    for i, (letter, record) in by_index.items():
        where: Delivery = deliveries[i]
        assert letter.value_bytes() == MALFORMED[i]
        assert letter.key_bytes() == f"key-{i}".encode() == record.key  # DLQ keyed by the original key
        assert letter.raw_headers() == headers_of(i)
        assert (letter.original_topic, letter.partition, letter.offset) == (
            tasks,
            where.partition,
            where.offset,
        )
        assert letter.reason == EXPECTED_REASONS[i]
        assert letter.error and letter.error_type == "SchemaError"
        assert letter.job_id == "job-poison" and letter.consumer_group == group
        assert letter.worker_id == "poison-test"


async def test_handler_failures_are_dead_lettered_not_retried_forever(
    settings: KafkaSettings, registry: TopicRegistry, unique_group: Callable[[str], str]
) -> None:
    tasks, dlq = registry.name("tasks"), registry.name("dlq")
    records = [(f"key-{i}".encode(), encode(Item(n=i, text="x")), headers_of(i)) for i in range(20)]
    handled: list[int] = []

    async def handle(message: Message, item: Item) -> None:
        if item.n == 3:
            raise ValueError("a bug in the handler")
        if item.n == 4:
            raise PoisonMessageError("candidate c-1 was never published", reason="unknown_candidate")
        handled.append(item.n)

    async with AsyncProducer(settings) as producer:
        await produce_all(producer, tasks, records)
        runtime = runtime_for(settings, registry, unique_group("handler-errors"), producer, handle)
        async with runtime:
            await wait_until(lambda: len(handled) == 18 and runtime.stats.dead_lettered == 2, 30, "18 + 2")

    assert runtime.stats.handler_errors == 1
    letters = [decode(r.value, DeadLetter) for r in await asyncio.to_thread(read_topic, settings, dlq, 2)]
    reasons = {letter.example_index: (letter.reason, letter.error_type, letter.error) for letter in letters}
    assert reasons == {
        3: ("handler_error", "ValueError", "a bug in the handler"),
        4: ("unknown_candidate", "PoisonMessageError", "candidate c-1 was never published"),
    }
