"""Reading a partition again survives faust's fetch loop raising the read offset after the seek.

faust sets a partition's read offset after each record it hands to the agent and drops fetched
records below it. Records of a batch fetched before a seek can still be handed over after it, and
each raises the read offset past the records the seek reads again. The consumer here is a stand-in
with the three members of faust's consumer that PartitionResync touches (no broker is involved).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from dspex.processors import aggregate_resync
from dspex.processors.aggregate_resync import (
    MAX_RETRY_S,
    MAX_SEEKS,
    RETRY_S,
    PartitionResync,
    SourcePositions,
)

SCORES = TP("scores", 3)


class FaustConsumerStandIn:
    """What PartitionResync uses of faust's consumer: read offsets, seek_wait, fetch, earliest."""

    def __init__(self) -> None:
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self.seeks: list[dict[TP, int]] = []
        self.fetches = 0

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> dict[TP, list[Any]]:
        self.fetches += 1
        return {}

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.seeks.append(dict(partitions))

    async def earliest_offsets(self, *partitions: TP) -> dict[TP, int]:
        return dict.fromkeys(partitions, 0)


class AppStandIn:
    def __init__(self) -> None:
        self.consumer = FaustConsumerStandIn()


async def test_the_read_offset_is_cleared_before_each_fetch_until_the_next_record_arrives() -> None:
    app = AppStandIn()
    consumer = app.consumer
    resync = PartitionResync(app, {}, Counter())
    batch = SourcePositions({})
    assert batch.admit(SCORES.topic, SCORES.partition, 412) == "gap"  # offsets 0..411 never came
    await resync.after_batch(batch)
    assert consumer.seeks == [{SCORES: 0}]
    assert consumer._read_offset[SCORES] is None

    # the rest of a batch fetched before the seek is handed over: faust raises the read offset
    consumer._read_offset[SCORES] = 415
    await consumer._getmany(None, 1.0)  # faust's fetch loop asks for its next batch
    assert consumer.fetches == 1
    assert consumer._read_offset[SCORES] is None  # the re-read records pass faust's check again

    # offset 0 arrived and was applied: faust's read offsets are its own again
    batch = SourcePositions({})
    assert batch.admit(SCORES.topic, SCORES.partition, 0) == "apply"
    await resync.after_batch(batch)
    consumer._read_offset[SCORES] = 1
    await consumer._getmany(None, 1.0)
    assert consumer._read_offset[SCORES] == 1
    assert consumer.seeks == [{SCORES: 0}]


async def test_one_consumer_is_hooked_once() -> None:
    app = AppStandIn()
    resync = PartitionResync(app, {}, Counter())
    resync.hook(app.consumer)
    hooked = app.consumer._getmany
    resync.hook(app.consumer)
    assert app.consumer._getmany is hooked
    await app.consumer._getmany(None, 1.0)
    assert app.consumer.fetches == 1  # the hook still fetches, once


async def test_seeks_of_one_gap_come_further_apart_and_give_up_after_max_seeks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    # the module's own clock only (time.monotonic itself also drives the event loop)
    monkeypatch.setattr(aggregate_resync, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    app = AppStandIn()
    stats: Counter[str] = Counter()
    resync = PartitionResync(app, {}, stats)
    batch = SourcePositions({})
    assert batch.admit(SCORES.topic, SCORES.partition, 412) == "gap"
    await resync.after_batch(batch)
    seek_times = [clock[0]]
    while len(app.consumer.seeks) < MAX_SEEKS:
        clock[0] += 0.5
        before = len(app.consumer.seeks)
        await resync.after_batch(SourcePositions({}))  # a batch with nothing of the partition
        if len(app.consumer.seeks) > before:
            seek_times.append(clock[0])
    waits = [later - earlier for earlier, later in itertools.pairwise(seek_times)]
    # 3 s, then twice as long each time, never more than MAX_RETRY_S
    assert waits == [RETRY_S, 2 * RETRY_S, 4 * RETRY_S] + [MAX_RETRY_S] * (MAX_SEEKS - 4)
    assert stats["gaps_accepted"] == 0
    clock[0] += MAX_RETRY_S
    await resync.after_batch(SourcePositions({}))
    assert stats["gaps_accepted"] == 1 and len(app.consumer.seeks) == MAX_SEEKS  # given up, no 11th
    assert resync.floor(SCORES.topic, SCORES.partition, 415) == 415  # the next record is taken as next
