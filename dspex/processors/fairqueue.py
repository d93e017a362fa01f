"""Fair sharing of a predictor between jobs: a per-job queue, served by deficit round robin.

The problem it solves: a job's tasks spread over every partition of the tasks topic, so a small
job submitted after a big one sits behind all of the big job's tasks in each partition. Read in
arrival order, it would finish when the big one does.

DESIGN. A predictor reads ahead of its running handlers (up to ``READ_AHEAD_MESSAGES`` messages and
``READ_AHEAD_BYTES`` bytes; past that its partitions pause, as under backpressure) into one queue
per job, keyed by the ``dspex-job-id`` header, so nothing is decoded to queue it. Whenever a
handler slot frees, the next task comes from the jobs in turn (deficit round robin, one unit per
task): in each round a job may start as many tasks as its weight, so jobs share the slots in
proportion to their weights whatever their sizes, and a job that arrives gets its first slot
within one round. The weight comes from the ``dspex-priority`` header: ``interactive`` 16,
``normal`` (also no header) 4, ``bulk`` 1; bulk is served less, never starved.

A job may also carry an in-flight budget (``num_threads`` at submission; every task of the job
names it in its ``dspex-max-in-flight`` header): at most that many of its tasks run at once in this
predictor (never more than ``--concurrency``). A job at its budget is passed over, its turn going
to the next job, until one of its tasks ends (:meth:`FairQueue.release`); the queue counts a task
as running from the moment it hands it out, so a burst of starts cannot overshoot the budget.

Each job of an optimization (one per candidate evaluation, or per batch of them) is a job of its
own here, so an optimization's evaluations share the predictors fairly with each other and with
everything else: none waits for another to finish.

What it does not change: offsets are still committed per partition only up to the oldest message
not done (the consumer's OffsetTracker), so a small job's tasks finishing ahead of a big job's
earlier ones make nothing committable early; after a crash they run again (at-least-once, with
deterministic ids downstream). Fairness holds within the read-ahead window: a small job behind
more than ``READ_AHEAD_MESSAGES`` tasks of other jobs in a predictor's partitions waits until the
window reaches it (more predictors widen the window: each reads its own partitions).

    >>> queue = FairQueue(lambda item: (item[0], 1))
    >>> for item in [("big", 1), ("big", 2), ("big", 3), ("small", 1)]:
    ...     queue.push(item)
    >>> [queue.pop() for _ in range(4)]
    [('big', 1), ('small', 1), ('big', 2), ('big', 3)]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from confluent_kafka import Message

from dspex.schemas.common import Priority
from dspex.schemas.headers import HEADER_JOB_ID, HEADER_MAX_IN_FLIGHT, HEADER_PRIORITY

__all__ = [
    "DEFAULT_PRIORITY",
    "PRIORITY_WEIGHTS",
    "READ_AHEAD_BYTES",
    "READ_AHEAD_MESSAGES",
    "FairQueue",
    "job_budget",
    "job_flow",
    "weight_of",
]

T = TypeVar("T")
Flow = tuple[str, int]  # (flow key, weight)

DEFAULT_PRIORITY: Priority = "normal"
# interactive : normal : bulk = 16 : 4 : 1. A round serves every waiting job at least once, so a
# new job waits at most the sum of the others' weights for its first slot.
PRIORITY_WEIGHTS: Mapping[str, int] = {"interactive": 16, "normal": 4, "bulk": 1}
READ_AHEAD_MESSAGES = 10_000
READ_AHEAD_BYTES = 64 * 1024 * 1024


def weight_of(priority: str | None) -> int:
    """The fair-queue weight of a priority name (None or a name this reader does not know: normal)."""
    default = PRIORITY_WEIGHTS[DEFAULT_PRIORITY]
    return default if priority is None else PRIORITY_WEIGHTS.get(priority, default)


def job_flow(message: Message) -> Flow:
    """A task message's flow: its job (from headers; "" when unreadable) and its priority's weight."""
    found = _flow_headers(message)
    return found.get(HEADER_JOB_ID, ""), weight_of(found.get(HEADER_PRIORITY) or None)


def job_budget(message: Message) -> int | None:
    """A task message's job in-flight budget, from its headers (None: the job set none)."""
    text = _flow_headers(message).get(HEADER_MAX_IN_FLIGHT, "")
    budget = int(text) if text.isascii() and text.isdigit() else 0
    return budget if budget >= 1 else None


_FLOW_HEADERS = frozenset({HEADER_JOB_ID, HEADER_PRIORITY, HEADER_MAX_IN_FLIGHT})


def _flow_headers(message: Message) -> dict[str, str]:
    # One pass over the headers for the few a queued task needs (every task read ahead comes
    # through here, for its flow and then its budget: the last message's answer is kept): the
    # first of a repeated header wins, as in dspex.schemas.headers; a value that is missing or not
    # UTF-8 reads as "" (unreadable, and not replaced by a later repeat).
    if _last_read.message is message:
        return _last_read.found
    found: dict[str, str] = {}
    headers = message.headers() or []
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        if name in _FLOW_HEADERS and name not in found:
            try:
                found[name] = value.decode("utf-8") if isinstance(value, bytes) else (value or "")
            except UnicodeDecodeError:
                found[name] = ""
    _last_read.message, _last_read.found = message, found
    return found


@dataclass
class _LastRead:
    message: Message | None = None
    found: dict[str, str] = field(default_factory=dict)


_last_read = _LastRead()  # the last message's flow headers: read once for job_flow and job_budget


@dataclass
class _Flow(Generic[T]):
    key: str
    weight: int
    items: deque[tuple[T, int]] = field(default_factory=deque)  # (item, size)
    deficit: int = 0


class FairQueue(Generic[T]):
    """A :class:`~dspex.streams.flow.Backlog` serving flows by weighted deficit round robin.

    ``classify(item)`` gives the item's flow key and weight (>= 1); ``size_of(item)`` its bytes.
    Within a flow, items leave in arrival order. ``budget_of(item)`` (None: no cap; the latest
    item's word counts) is how many items of its flow may be out at once: handed out by :meth:`pop`
    and not yet given back by :meth:`release` with their ``identify(item)``.
    """

    def __init__(
        self,
        classify: Callable[[T], Flow],
        size_of: Callable[[T], int] = lambda _: 0,
        *,
        budget_of: Callable[[T], int | None] | None = None,
        identify: Callable[[T], Hashable] = id,
    ) -> None:
        self._classify = classify
        self._size_of = size_of
        self._budget_of = budget_of
        self._budgets: dict[str, int] = {}  # flows with a budget, while they have items queued or out
        self._identify = identify
        self._out: dict[Hashable, tuple[str, T]] = {}  # items handed out and not released: id -> (flow, item)
        self._out_per_flow: dict[str, int] = {}
        self._flows: dict[str, _Flow[T]] = {}
        self._ring: deque[_Flow[T]] = deque()  # flows with items; the head's turn is now
        self._turn_open = False  # whether the head already got its quantum for this turn
        self._count = 0
        self._bytes = 0

    def push(self, item: T) -> None:
        """Queue ``item`` at the end of its flow (a new flow joins at the end of the round)."""
        key, weight = self._classify(item)
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = _Flow(key, max(1, weight))
            self._ring.append(flow)
        else:
            flow.weight = max(1, weight)  # the latest word on the job's priority
        if self._budget_of is not None:
            budget = self._budget_of(item)
            if budget is None:
                self._budgets.pop(key, None)
            else:
                self._budgets[key] = max(1, budget)
        size = self._size_of(item)
        flow.items.append((item, size))
        self._count += 1
        self._bytes += size

    def pop(self) -> T | None:
        """The next item: the head flow's while its turn lasts, then the next flow's (None when
        every flow with items is at its budget)."""
        blocked = 0  # consecutive flows passed over at their budget: a full round of them ends it
        while self._ring and blocked < len(self._ring):
            flow = self._ring[0]
            if self._at_budget(flow.key):
                flow.deficit = 0  # no credit piles up while it waits
                self._end_turn()
                blocked += 1
                continue
            if not self._turn_open:
                flow.deficit += flow.weight
                self._turn_open = True
            if flow.deficit >= 1:
                return self._take(flow)
            self._end_turn()
            blocked = 0
        return None

    def release(self, item_id: Hashable) -> None:
        """An item handed out is done (or will never run): its flow may start another. Idempotent."""
        entry = self._out.pop(item_id, None)
        if entry is not None:
            self._forget_out(entry[0])

    def out(self, key: str) -> int:
        """Items of flow ``key`` handed out and not released."""
        return self._out_per_flow.get(key, 0)

    def drop(self, gone: Callable[[T], bool]) -> None:
        """Forget the items for which ``gone(item)`` holds (a revoked partition's), queued or out."""
        for flow in list(self._ring):
            flow.items = deque(entry for entry in flow.items if not gone(entry[0]))
            if not flow.items:
                self._retire(flow)
        self._count = sum(len(flow.items) for flow in self._ring)
        self._bytes = sum(size for flow in self._ring for _, size in flow.items)
        for item_id, (_key, item) in list(self._out.items()):
            if gone(item):
                self.release(item_id)

    def clear(self) -> None:
        """Forget everything, the items out included."""
        self._flows.clear()
        self._ring.clear()
        self._out.clear()
        self._out_per_flow.clear()
        self._budgets.clear()
        self._turn_open = False
        self._count = self._bytes = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes queued (as ``size_of`` counts them)."""
        return self._bytes

    def queued(self) -> dict[str, int]:
        """Items queued per flow (for logs and tests)."""
        return {flow.key: len(flow.items) for flow in self._ring}

    def _at_budget(self, key: str) -> bool:
        cap = self._budgets.get(key)
        return cap is not None and self._out_per_flow.get(key, 0) >= cap

    def _forget_out(self, key: str) -> None:
        left = self._out_per_flow.get(key, 0) - 1
        if left > 0:
            self._out_per_flow[key] = left
            return
        self._out_per_flow.pop(key, None)
        if key not in self._flows:  # nothing queued or out: the flow's budget is not needed now
            self._budgets.pop(key, None)

    def _take(self, flow: _Flow[T]) -> T:
        item, size = flow.items.popleft()
        flow.deficit -= 1
        self._count -= 1
        self._bytes -= size
        if flow.key in self._budgets:  # counted only for flows with a budget
            item_id = self._identify(item)
            if item_id not in self._out:
                self._out[item_id] = (flow.key, item)
                self._out_per_flow[flow.key] = self._out_per_flow.get(flow.key, 0) + 1
        if not flow.items:
            self._retire(flow)  # an idle flow keeps no credit: DRR's rule, so bursts stay bounded
        return item

    def _end_turn(self) -> None:
        self._ring.rotate(-1)
        self._turn_open = False

    def _retire(self, flow: _Flow[T]) -> None:
        if self._ring and self._ring[0] is flow:
            self._turn_open = False
        self._ring.remove(flow)
        del self._flows[flow.key]
        if not self._out_per_flow.get(flow.key):
            self._budgets.pop(flow.key, None)
