"""Bookkeeping of the consumer runtime, with no Kafka in it: contiguous commits, watermarks, backlog.

Handlers finish out of order, but a committed offset promises that every earlier message of its
partition is done. :class:`OffsetTracker` therefore commits, per partition, only up to the
first message that is still in progress. :class:`Watermarks` turns the number of outstanding
messages into pause and resume decisions with hysteresis, so a consumer does not flap.
A :class:`Backlog` holds messages received and not yet started and decides which starts next:
:class:`FifoBacklog` in arrival order (the default), or a scheduler of the processor's own (the
predictor's fair queue, :mod:`dspex.processors.fairqueue`).
:class:`MembershipWatch` tells from librdkafka's statistics when a member is stuck out of its group.

    >>> tracker = OffsetTracker()
    >>> for offset in (5, 6, 7):
    ...     tracker.started(("t", 0), offset)
    >>> tracker.finished(("t", 0), 6)
    >>> tracker.committable(("t", 0)) is None  # 5 is still running
    True
    >>> tracker.finished(("t", 0), 5)
    >>> tracker.committable(("t", 0))  # 5 and 6 done, 7 running: resume at 7
    7
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

from dspex.errors import ConfigurationError

__all__ = [
    "Backlog",
    "FifoBacklog",
    "MembershipWatch",
    "OffsetTracker",
    "PressureChange",
    "TopicPartitionKey",
    "Watermarks",
]

TopicPartitionKey = tuple[str, int]
PressureChange = Literal["pause", "resume"]
T = TypeVar("T")


class Backlog(Protocol[T]):
    """Messages received and not started yet; :meth:`pop` decides which one starts next.

    Whatever the order, commits stay contiguous: the offset tracker holds back a partition's commit
    at its oldest message not done, however late the backlog starts it.
    """

    def push(self, item: T) -> None:
        """Queue ``item`` (just received)."""

    def pop(self) -> T | None:
        """The item to start now (None when empty)."""

    def drop(self, gone: Callable[[T], bool]) -> None:
        """Forget every queued item for which ``gone(item)`` holds (their partition was revoked)."""

    def clear(self) -> None:
        """Forget everything (draining: what never started stays uncommitted)."""

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int:
        """Bytes queued, as the size function given to the backlog counts them."""


class FifoBacklog(Generic[T]):
    """A :class:`Backlog` that starts items in the order they arrived."""

    def __init__(self, size_of: Callable[[T], int] = lambda _: 0) -> None:
        self._size_of = size_of
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0

    def push(self, item: T) -> None:
        size = self._size_of(item)
        self._items.append((item, size))
        self._bytes += size

    def pop(self) -> T | None:
        if not self._items:
            return None
        item, size = self._items.popleft()
        self._bytes -= size
        return item

    def drop(self, gone: Callable[[T], bool]) -> None:
        self._items = deque(entry for entry in self._items if not gone(entry[0]))
        self._bytes = sum(size for _, size in self._items)

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes


@dataclass
class _PartitionOffsets:
    waiting: list[int] = field(default_factory=list)  # started, not yet contiguous-done; ascending
    done: set[int] = field(default_factory=set)  # finished but behind an unfinished one
    next_commit: int | None = None  # offset + 1 of the last contiguous-done message
    committed: int | None = None  # the last next_commit handed out for committing


class OffsetTracker:
    """Per-partition record of messages in progress, and the offset that is safe to commit."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, _PartitionOffsets] = {}

    def started(self, tp: TopicPartitionKey, offset: int) -> None:
        """A message was received and will be handled; it holds back commits until finished."""
        state = self._partitions.setdefault(tp, _PartitionOffsets())
        if state.waiting and offset <= state.waiting[-1]:
            if offset not in state.waiting:  # out of order (after a seek): keep the list sorted
                bisect.insort(state.waiting, offset)
            return
        state.waiting.append(offset)

    def finished(self, tp: TopicPartitionKey, offset: int) -> None:
        """A message is done (its output acknowledged). Unknown partitions (revoked) are ignored."""
        state = self._partitions.get(tp)
        if state is None or offset in state.done:
            return
        state.done.add(offset)
        # Kafka delivers a partition in offset order, so the head of `waiting` is the oldest
        # message in progress; advance past every finished one at the head.
        head = 0
        while head < len(state.waiting) and state.waiting[head] in state.done:
            state.done.discard(state.waiting[head])
            head += 1
        if head:
            state.next_commit = state.waiting[head - 1] + 1
            del state.waiting[:head]

    def committable(self, tp: TopicPartitionKey) -> int | None:
        """The offset to commit for ``tp`` (the next message to read), or None if nothing is done."""
        state = self._partitions.get(tp)
        return None if state is None else state.next_commit

    def pending_commits(self) -> dict[TopicPartitionKey, int]:
        """Committable offsets that moved since they were last handed out by :meth:`mark_committed`."""
        return {
            tp: state.next_commit
            for tp, state in self._partitions.items()
            if state.next_commit is not None and state.next_commit != state.committed
        }

    def mark_committed(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Remember that ``offsets`` were sent for committing."""
        for tp, offset in offsets.items():
            if tp in self._partitions:
                self._partitions[tp].committed = offset

    def in_progress(self, tp: TopicPartitionKey | None = None) -> int:
        """Messages started and not finished (on ``tp``, or on every partition)."""
        states = self._partitions.values() if tp is None else [self._partitions.get(tp, _PartitionOffsets())]
        return sum(len(state.waiting) - len(state.done) for state in states)

    def forget(self, tps: Iterable[TopicPartitionKey]) -> None:
        """Drop partitions that were revoked or lost; late finishes for them are then ignored."""
        for tp in tps:
            self._partitions.pop(tp, None)

    def partitions(self) -> list[TopicPartitionKey]:
        """Partitions with any state."""
        return list(self._partitions)


class Watermarks:
    """Pause at ``high`` outstanding messages or more; resume at ``low`` or fewer.

    A byte budget may hold partitions paused too: :meth:`update` takes how full it is (``fill``,
    1.0 = at the budget): paused at 1.0 or more, resumed only once at half of it or less.
    """

    def __init__(self, high: int, low: int) -> None:
        if high < 1 or not 0 <= low < high:
            raise ConfigurationError(
                f"watermarks need 0 <= low < high and high >= 1; got low={low}, high={high}"
            )
        self.high = high
        self.low = low
        self.paused = False

    def update(self, outstanding: int, fill: float = 0.0) -> PressureChange | None:
        """The change to apply for ``outstanding`` messages (and a byte budget ``fill``), if any."""
        if not self.paused and (outstanding >= self.high or fill >= 1.0):
            self.paused = True
            return "pause"
        if self.paused and self.has_room(outstanding, fill):
            self.paused = False
            return "resume"
        return None

    def has_room(self, outstanding: int, fill: float = 0.0) -> bool:
        """Whether paused partitions may resume: at the low watermark and half the byte budget."""
        return outstanding <= self.low and fill <= 0.5


class MembershipWatch:
    """Tells when a group member has stayed out of its group too long, from librdkafka's statistics.

    Every statistics document carries the member's group state: ``cgrp.state`` is ``up`` once the
    coordinator is known, ``cgrp.join_state`` is ``steady`` once the member holds the assignment of
    the current generation. A member leaves that pair during each rebalance and while the broker
    is away, and comes back within seconds. librdkafka has had bugs where a member never comes
    back after the coordinator restarted (it keeps retrying a join that cannot succeed, or stops
    joining), and the only cure known is a new member: :meth:`observe` says when.
    """

    def __init__(self, stuck_after: float) -> None:
        if stuck_after <= 0:
            raise ConfigurationError(f"stuck_after must be positive, got {stuck_after}")
        self.stuck_after = stuck_after
        self._out_since: float | None = None

    def observe(self, state: object, join_state: object, now: float) -> bool:
        """Record one document's group state at ``now`` (seconds, monotonic).

        True once the member has been out of (up, steady) for ``stuck_after`` seconds; the count
        then starts again, so a replaced member gets the same time to join.
        """
        if state == "up" and join_state == "steady":
            self._out_since = None
            return False
        if self._out_since is None:
            self._out_since = now
        if now - self._out_since < self.stuck_after:
            return False
        self._out_since = now
        return True
