"""Predictors that died without a word, and the LM calls they leave uncharged.

A predictor's heartbeat carries, per job, the LM calls its running tasks had answered that no
record it produced carries yet (``WorkerHeartbeat.unreported``). Killed (kill -9, a machine lost),
it never reports them: its tasks run again elsewhere with calls of their own, and the job's
``usage`` never holds the first ones. So every aggregator instance follows the whole workers topic
(a :class:`~dspex.streams.reader.CompactedReader`, no consumer group) into a :class:`DeathWatch`,
and a worker is **dead** once

- its last heartbeat was not ``final`` (a worker stopping in order sends a final one, after its
  tasks were drained and their records handed to its producer),
- nothing was heard from it for ``dead_after`` seconds (``--dead-worker-after``, default 30), and
- all that time heartbeats of other workers kept arriving, never more than ``gap`` seconds apart
  (the aggregator's own count: it reads them back from the topic).

DESIGN: the third rule tells a dead worker from a broker outage (or a stalled aggregator). While
the broker is gone nobody's heartbeat arrives; the stream has a gap, and a worker's silence counts
only from when heartbeats flow again. The consumer group's membership would be no better evidence:
a member leaves its group after the session timeout also when it is alive and merely cut off, and
reading it takes admin requests. A worker declared dead that speaks again (same ``started_at``: a
long stall, a network cut) is taken back: its share leaves the jobs' ``usage_unreported``, since
its own records will charge those calls.

The dead worker's last heartbeat is recorded per job in ``JobMeta.unreported`` (set, not added:
declaring a death twice, on a restart or by two instances, changes nothing) and summed into the
status's ``usage_unreported``, apart from ``usage``. What it says is the state at that heartbeat,
at most one heartbeat interval before the death: calls answered in those last seconds are missing
from it, calls reported in them are counted in both. It is never added to ``usage``.

    >>> watch = DeathWatch(dead_after=30.0)
    >>> reader = CompactedReader(settings, registry.name("workers"), decoder=watch.decode)  # doctest: +SKIP
    >>> dead, revived = watch.verdicts()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dspex.processors.aggregate_state import JobMeta, StatusClock, unreported_usage
from dspex.processors.heartbeat import HEARTBEAT_INTERVAL_S
from dspex.schemas import JobStatus, UsageRecord, WorkerHeartbeat, decode, encode

__all__ = [
    "DEAD_AFTER_S",
    "STREAM_GAP_S",
    "DeathWatch",
    "death_key",
    "record_unreported",
    "restate_unreported",
]

logger = logging.getLogger(__name__)

DEAD_AFTER_S = 30.0
"""Silence after which a worker is dead (while others are heard): well past an event loop's worst
stalls (1-2 s at a thousand tasks in flight) and a producer's reconnect after an outage (<= 10 s)."""
STREAM_GAP_S = 3 * HEARTBEAT_INTERVAL_S
"""No heartbeat at all from anyone for this long: the broker (or this reader) was away."""
_FORGET_S = 3600.0  # the workers topic's retention: a worker unheard this long is forgotten


@dataclass
class _Heard:
    beat: WorkerHeartbeat
    at: float  # this process's monotonic clock when it was read
    dead: bool = False


class DeathWatch:
    """Which workers died without a final heartbeat, from the heartbeats heard (see the module docs)."""

    def __init__(
        self,
        dead_after: float = DEAD_AFTER_S,
        *,
        gap: float = STREAM_GAP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dead_after = dead_after
        self.gap = gap
        self._clock = clock
        self._heard: dict[str, _Heard] = {}
        self._last_any: float | None = None
        self._flowing_since = 0.0
        self._revived: list[str] = []

    def decode(self, value: bytes) -> WorkerHeartbeat:
        """Decode a workers-topic value and hear it (a CompactedReader's decoder)."""
        beat = decode(value, WorkerHeartbeat)
        self.hear(beat)
        return beat

    def hear(self, beat: WorkerHeartbeat) -> None:
        """Note a heartbeat as read now."""
        now = self._clock()
        if self._last_any is None or now - self._last_any > self.gap:
            self._flowing_since = now  # the stream had a gap: silences count from here
        self._last_any = now
        before = self._heard.get(beat.worker_id)
        if before is not None and before.dead and before.beat.started_at == beat.started_at:
            self._revived.append(death_key(beat))
        self._heard[beat.worker_id] = _Heard(beat, now)

    def verdicts(self) -> tuple[list[WorkerHeartbeat], list[str]]:
        """Workers found dead since the last call (their last heartbeat), and workers declared dead
        before that were heard again since (their :func:`death_key`)."""
        revived, self._revived = self._revived, []
        now = self._clock()
        self._forget(now)
        if self._last_any is None or now - self._last_any > self.gap:
            return [], revived  # nothing heard lately: the broker may be away, nobody is judged
        dead = []
        for heard in self._heard.values():
            if heard.dead or heard.beat.final:
                continue
            if now - max(heard.at, self._flowing_since) > self.dead_after:
                heard.dead = True
                dead.append(heard.beat)
        return dead, revived

    def _forget(self, now: float) -> None:
        for worker_id in [w for w, heard in self._heard.items() if now - heard.at > _FORGET_S]:
            del self._heard[worker_id]


def death_key(beat: WorkerHeartbeat) -> str:
    """Whose share of ``JobMeta.unreported`` a heartbeat's worker holds: one run of one worker (a
    worker restarted under the same ``--worker-id`` is another run)."""
    return f"{beat.worker_id}@{beat.started_at.isoformat()}"


def record_unreported(meta: JobMeta, key: str, usage: UsageRecord | None) -> bool:
    """Set what a dead worker (its :func:`death_key`) left unreported for the job (None: take it
    back); whether that changed anything."""
    value = None if usage is None or not usage.lm_calls else usage.model_dump(mode="json")
    if meta.unreported.get(key) == value:
        return False
    if value is None:
        del meta.unreported[key]
    else:
        meta.unreported[key] = value
    return True


def restate_unreported(meta: JobMeta, clock: StatusClock) -> bytes:
    """A terminal job's status again with its ``usage_unreported`` as ``meta`` has it now (nothing
    else changes but ``seq`` and ``updated_at``); ``meta.final`` is updated."""
    if meta.final is None:
        raise ValueError(f"job {meta.job_id} is not terminal")
    status = decode(meta.final.encode(), JobStatus)
    now = clock.now()
    changes = {"usage_unreported": unreported_usage(meta), "seq": clock.next_seq(now), "updated_at": now}
    meta.final = encode(status.model_copy(update=changes)).decode()
    return meta.final.encode()
