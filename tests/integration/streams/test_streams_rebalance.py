"""A second member joins while the first has 64 handlers in flight and its partitions paused.

Deterministic by construction, not by fetch timing: the first wave is exactly 8 messages on each
of the 8 partitions, so the first member's 64 in-flight messages hold every partition, whichever
order the broker serves them in; the rest is produced only once it is full and paused.

Checked against the handlers' own log: no offset is ever committed past a message that has
not finished (seen both in the runtime's commit hook and by polling the group's committed
offsets from outside), the partitions the first member keeps stay paused and deliver nothing,
and in the end every message is handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Message
from streams_kafka import fully_committed, wait_until, wait_until_async

from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.consumer import ConsumerOptions, ConsumerRuntime
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

MESSAGES = 3_000
PARTITIONS = 8
MAX_IN_FLIGHT = 64
DRAIN_S = 2.0

PER_PARTITION_HELD = MAX_IN_FLIGHT // PARTITIONS  # the first wave: what the first member holds
SMALL_FETCHES = {"max.partition.fetch.bytes": 256}


class HandlerLog:
    """Which messages finished (output acknowledged), and every commit checked against it."""

    def __init__(self) -> None:
        self.finished: set[tuple[int, int]] = set()
        self.finish_count: Counter[tuple[int, int]] = Counter()
        self.violations: list[str] = []
        self.commits_checked = 0

    def finish(self, message: Message) -> None:
        where = (int(message.partition() or 0), int(message.offset() or 0))
        self.finished.add(where)
        self.finish_count[where] += 1

    def check(self, source: str, offsets: dict[tuple[str, int], int]) -> None:
        """A committed offset C promises that offsets 0..C-1 of its partition are finished."""
        self.commits_checked += 1
        for (_, partition), committed in offsets.items():
            missing = [o for o in range(committed) if (partition, o) not in self.finished]
            if missing:
                self.violations.append(
                    f"{source}: [{partition}] committed {committed}, unfinished {missing[:5]}"
                )


async def watch_committed(admin: KafkaAdmin, group: str, topic: str, log: HandlerLog) -> None:
    partitions = [(topic, p) for p in range(PARTITIONS)]
    while True:
        committed = await asyncio.to_thread(admin.committed, group, partitions)
        log.check("broker", committed)
        await asyncio.sleep(0.05)


async def produce_wave(producer: AsyncProducer, topic: str, indices: range) -> None:
    """Messages ``k{i}`` for ``i`` in ``indices``, message i on partition i % PARTITIONS."""
    pending = [
        await producer.send(topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=i % PARTITIONS)
        for i in indices
    ]
    await asyncio.gather(*pending)


async def test_rebalance_under_load_never_commits_past_unfinished_work(
    settings: KafkaSettings, registry: TopicRegistry, unique_group: Callable[[str], str]
) -> None:
    tasks, outputs, dlq = registry.name("tasks"), registry.name("predictions"), registry.name("dlq")
    group = unique_group("rebalance")
    log = HandlerLog()
    rng = random.Random(5)
    gate_a = asyncio.Event()  # the first member's handlers wait here: 64 in flight, paused
    handled_by_b = 0

    async with AsyncProducer(settings) as producer:
        await produce_wave(producer, tasks, range(MAX_IN_FLIGHT))

        started_by_a: set[tuple[int, int]] = set()

        async def handle_a(message: Message, value: bytes) -> None:
            started_by_a.add((int(message.partition() or 0), int(message.offset() or 0)))
            await gate_a.wait()
            await producer.produce(outputs, value, key=message.key())
            log.finish(message)

        async def handle_b(message: Message, value: bytes) -> None:
            nonlocal handled_by_b
            await asyncio.sleep(rng.uniform(0, 0.005))
            await producer.produce(outputs, value, key=message.key())
            log.finish(message)
            handled_by_b += 1

        def member(handler: Callable, name: str, **options: object) -> ConsumerRuntime:
            return ConsumerRuntime(
                settings,
                ConsumerOptions(
                    group_id=group,
                    topics=[tasks],
                    dlq_topic=dlq,
                    max_in_flight=MAX_IN_FLIGHT,
                    drain_timeout=DRAIN_S,
                    fast_groups=True,
                    worker_id=name,
                    config=SMALL_FETCHES,
                    **options,
                ),
                handler=handler,
                producer=producer,
                on_commit=lambda offsets: log.check(name, offsets),
            )

        # The first member resumes only once everything it holds is done, so it stays paused
        # for as long as the gate is closed.
        a = member(handle_a, "a", low_watermark=0)
        b = member(handle_b, "b")
        watcher = asyncio.create_task(watch_committed(KafkaAdmin(settings), group, tasks, log))
        try:
            async with a:
                await wait_until(
                    lambda: (
                        a.stats.in_flight == MAX_IN_FLIGHT
                        and a.paused_partitions() == a.assignment()
                        and len(a.assignment()) == PARTITIONS
                    ),
                    30,
                    "the first member full and paused",
                )
                held = Counter(partition for partition, _ in started_by_a - log.finished)
                assert held == dict.fromkeys(range(PARTITIONS), PER_PARTITION_HELD), held
                await produce_wave(producer, tasks, range(MAX_IN_FLIGHT, MESSAGES))

                async with b:
                    await wait_until(
                        lambda: b.assignment() and len(a.assignment()) + len(b.assignment()) == PARTITIONS,
                        30,
                        "the partitions split between the two members",
                    )
                    kept = a.assignment()
                    assert a.stats.cancelled > 0, "the revoked partitions' held handlers were not cancelled"
                    assert a.outstanding > 0, "the first member holds nothing on the partitions it kept"
                    assert a.paused_partitions() >= kept, "pauses did not hold on the kept partitions"
                    received_by_a = a.stats.received
                    await wait_until(lambda: handled_by_b >= 300, 30, "the second member to handle 300")
                    assert a.stats.received == received_by_a, "a paused partition delivered messages"
                    assert a.paused_partitions() >= kept

                    gate_a.set()
                    # A commit past unfinished work loses those messages: stop waiting at once.
                    await wait_until(
                        lambda: len(log.finished) == MESSAGES or bool(log.violations), 60, "every message"
                    )
                    assert log.violations == []
                    admin = KafkaAdmin(settings)
                    await wait_until_async(lambda: fully_committed(admin, group, tasks), 15, "full commit")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    duplicates = sum(count - 1 for count in log.finish_count.values())
    print(f"\ncommits checked: {log.commits_checked}; duplicates: {duplicates}; a: {a.stats}\nb: {b.stats}")
    assert log.violations == []
    assert log.commits_checked > 10
    assert len(log.finished) == MESSAGES
    assert a.stats.rebalances >= 2 and b.stats.rebalances >= 1
    assert a.stats.pauses >= 1 and a.stats.resumes >= 1
