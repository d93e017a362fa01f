"""Reading source partitions again from the offsets the aggregator's own tables recorded.

The aggregator does not trust faust's committed offsets to say what it has applied. faust 0.15
can skip records on a (re)start: at the end of table recovery it resumes the source partitions,
seeks them to the committed offsets while its fetcher already hands records to the agent's
queue, and then resumes flow control, which clears that queue: records fetched in between are
dropped, and the fetcher's position is already past them (``Recovery.on_recovery_completed``,
faust-streaming issue #596 area). Its commit can also run ahead of table writes, since
``ProducerBuffer.flush`` gives up after 0.1 s without a send.

So the ``positions`` table holds, per source partition, the next offset to apply, written only
once the batch's table writes are on the broker, and :class:`SourcePositions` applies records
strictly in offset order from there. :class:`PartitionResync` seeks a partition back to it when
the agent sees a record beyond it, and, once after every rebalance, when the consumer's position
is beyond it (nothing more may arrive on that partition to reveal the gap).

A seek alone does not make faust hand the re-read records over: its fetch loop drops a record
below the partition's read offset, and it sets that offset after each record it hands over, once
the agent's queue took it. A seek that lands while the loop is part-way through a fetched batch
(waiting on a full queue: what a loaded machine does all the time) sees the rest of that batch
raise the read offset again, and the re-read records are dropped as already read; every later
seek can lose the same way, until the gap is given up for real. So while a partition is being
read again, its read offset is cleared before every fetch too (:meth:`PartitionResync.hook`),
the point where no record fetched before the seek is left to raise it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.errors import KafkaError
from faust.types import TP

from dspex.processors.aggregate_state import ReadView

__all__ = [
    "MAX_RETRY_S",
    "MAX_SEEKS",
    "RETRY_S",
    "OffsetVerdict",
    "PartitionResync",
    "SourcePositions",
    "position_key",
]

logger = logging.getLogger(__name__)

RETRY_S = 3.0
"""A partition still missing its next record this long after its first seek is sought again; the
wait doubles after each later seek, up to MAX_RETRY_S."""
MAX_RETRY_S = 15.0
"""The longest wait between two seeks of one partition. On a loaded machine the agent can take many
seconds to work through what it had queued before the re-read records reach it (seen: three seeks
3 s apart before they did), and every seek queues the partition once more: a fixed short wait
turns that backlog into a gap given up on."""
MAX_SEEKS = 10
"""After this many seeks without the next record (about two minutes), the gap is taken as real
(logged as an error). Source topics are neither compacted nor transactional and records that
retention deleted are skipped at once (the floor), so a real gap is not expected there."""

OffsetVerdict = Literal["apply", "replayed", "gap"]


def position_key(topic: str, partition: int) -> str:
    """The ``positions`` table key of one source partition."""
    return f"{topic}:{partition}"


class SourcePositions:
    """The next offset to apply on each source partition, as one batch advances it.

    Records are applied strictly in offset order, from the offset the ``positions`` table holds
    (0 when it holds none: the whole partition). A record below it was applied before (faust
    re-reads from its committed offset, which may be older); a record above it means records
    in between never reached us (faust can drop fetched records at the end of a rebalance, or
    commit past records whose table writes were lost), so it is held back and the aggregator
    reads the partition again from ``gaps``. Re-read records are harmless: the bitmaps make
    applying a record twice a no-op, and holding back later ones keeps "first score wins" in
    offset order.

    positions = SourcePositions(positions_table)
    positions.admit("scores", 3, 41)   # "apply" | "replayed" | "gap"
    positions.writes()                 # {"scores:3": (3, 42)}
    """

    def __init__(self, stored: ReadView) -> None:
        self._stored = stored
        self._next: dict[str, tuple[int, int]] = {}
        self.gaps: dict[tuple[str, int], int] = {}
        """``(topic, partition)`` -> offset to read again from, for partitions held back."""

    def expected(self, topic: str, partition: int) -> int:
        """The next offset to apply on ``topic[partition]``."""
        key = position_key(topic, partition)
        if key in self._next:
            return self._next[key][1]
        stored = self._stored.get(key)
        return 0 if stored is None else int(stored)

    def admit(self, topic: str, partition: int, offset: int, *, floor: int = 0) -> OffsetVerdict:
        """Whether the record at ``offset`` is next; ``floor``: no record below it can be read any more."""
        expected = max(self.expected(topic, partition), floor)
        if offset < expected:
            return "replayed"
        if offset > expected:
            self.gaps.setdefault((topic, partition), expected)
            return "gap"
        self._next[position_key(topic, partition)] = (partition, offset + 1)
        self.gaps.pop((topic, partition), None)
        return "apply"

    def writes(self) -> dict[str, tuple[int, int]]:
        """``key -> (partition, next offset)`` for every partition this batch advanced."""
        return dict(self._next)


@dataclass
class _Pending:
    """A partition being read again from ``offset``."""

    offset: int
    floor: int = 0  # the earliest offset still on the broker
    seeks: int = 0
    last_seek: float = -math.inf
    give_up: bool = False

    def retry_after(self) -> float:
        """Seconds from the last seek to the next one (see RETRY_S)."""
        return min(RETRY_S * 2.0 ** max(self.seeks - 1, 0), MAX_RETRY_S)


class PartitionResync:
    """Seeks source partitions back to the recorded next offset, and retries until it arrives.

    resync = PartitionResync(app, positions_table, stats)
    floor = resync.floor(topic, partition, offset)   # for SourcePositions.admit
    await resync.after_batch(positions)              # in the agent, after the batch is durable
    await resync.check(sources)                      # in a timer, while not rebalancing
    """

    def __init__(self, app: Any, positions: Any, stats: Counter[str]) -> None:
        self._app, self._positions, self._stats = app, positions, stats
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._checked_generation: int | None = None
        self._hooked: Any = None  # the consumer whose fetches clear the read offsets (see hook)

    def floor(self, topic: str, partition: int, offset: int) -> int:
        """The lowest offset the agent may apply next on this partition (0: no constraint)."""
        pending = self._pending.get((topic, partition))
        if pending is None:
            return 0
        return offset if pending.give_up else pending.floor

    async def after_batch(self, positions: SourcePositions) -> None:
        """Forget partitions that got their next record; seek those with a (new) gap."""
        for key, pending in list(self._pending.items()):
            if positions.expected(*key) > pending.offset:
                del self._pending[key]
        for key, offset in positions.gaps.items():
            self._expect(key, offset)
        await self._seek_due()

    async def check(self, sources: set[str]) -> None:
        """Once per rebalance, seek owned partitions whose position is past the recorded offset."""
        generation = self._app.consumer_generation_id
        if generation != self._checked_generation:
            owned = {tp for tp in self._app.assignor.assigned_actives() if tp.topic in sources}
            self._pending = {key: p for key, p in self._pending.items() if TP(*key) in owned}
            if await self._check_positions(owned):
                self._checked_generation = generation
        await self._seek_due()

    async def _check_positions(self, owned: set[TP]) -> bool:
        view = SourcePositions(self._positions.data)
        for tp in owned:
            recorded = view.expected(tp.topic, tp.partition)
            try:
                position = await self._app.consumer.position(tp)
            except KafkaError as exc:  # assignment changing under us: try again next tick
                logger.info("no position for %s[%s] (%s); checking later", tp.topic, tp.partition, exc)
                return False
            if position is not None and position > recorded:
                self._expect((tp.topic, tp.partition), recorded)
        return True

    def _expect(self, key: tuple[str, int], offset: int) -> None:
        pending = self._pending.get(key)
        if pending is None or pending.offset != offset:
            self._pending[key] = _Pending(offset)

    async def _seek_due(self) -> None:
        now = time.monotonic()
        for key, pending in list(self._pending.items()):
            if not pending.give_up and now - pending.last_seek >= pending.retry_after():
                await self._seek(TP(*key), pending, now)

    def hook(self, consumer: Any) -> None:
        """Clear the read offset of every partition being read again before each of the
        consumer's fetches (see the module docs); once per consumer."""
        if self._hooked is consumer:
            return
        fetch = consumer._getmany

        async def fetch_rereading(*args: Any, **kwargs: Any) -> Any:
            for (topic, partition), pending in self._pending.items():
                if pending.seeks and not pending.give_up:
                    # faust skips no record of the partition then; SourcePositions sorts them
                    consumer._read_offset[TP(topic, partition)] = None
            return await fetch(*args, **kwargs)

        consumer._getmany = fetch_rereading
        self._hooked = consumer

    async def _seek_in_consumer_thread(self, tp: TP, offset: int) -> None:
        # faust's `consumer.seek` calls aiokafka's seek from this thread while aiokafka fetches in
        # its own: a fetch in flight then fails with KeyError and the worker crashes (seen in CI).
        # `seek_wait` runs the seek in aiokafka's thread; the read offset is then reset as `seek`
        # would, so that records from `offset` on are not dropped as already read.
        consumer = self._app.consumer
        self.hook(consumer)
        await consumer.seek_wait({tp: offset})
        consumer._read_offset[tp] = offset if offset else None

    async def _seek(self, tp: TP, pending: _Pending, now: float) -> None:
        pending.last_seek = now
        if pending.seeks >= MAX_SEEKS:
            pending.give_up = True
            self._stats["gaps_accepted"] += 1
            logger.error(
                "%s[%s]: offset %s never arrived after %s seeks; taking the next record as next",
                tp.topic,
                tp.partition,
                pending.offset,
                pending.seeks,
            )
            return
        pending.seeks += 1
        try:
            earliest = (await self._app.consumer.earliest_offsets(tp)).get(tp, 0)
            pending.floor = max(pending.floor, earliest or 0)
            await self._seek_in_consumer_thread(tp, max(pending.offset, pending.floor))
        except KafkaError as exc:  # not assigned any more, or the broker is away: retried later
            logger.warning("could not seek %s[%s]: %s", tp.topic, tp.partition, exc)
            return
        self._stats["seeks"] += 1
        logger.warning(
            "reading %s[%s] again from %s (seek %s): records from there on were not applied",
            tp.topic,
            tp.partition,
            max(pending.offset, pending.floor),
            pending.seeks,
        )
