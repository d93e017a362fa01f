"""What an optimize worker spent on a step that no checkpoint holds yet, and who reports it.

An optimization's ``usage`` is what its checkpoints hold: a step's cost (the optimize worker's own
LM calls, proposals or reflections, and the usage the step's sub-jobs report) is charged when the
step ends and its checkpoint is acknowledged. A worker killed mid-step (kill -9) takes that cost
with it: the next owner resumes from the checkpoint and redoes the step, charging its own calls
only. So the worker lists, per optimization, the step's spending so far in its heartbeats
(``WorkerHeartbeat.unreported``, as predictors list their tasks'): :class:`StepSpend` keeps it, from
the step's own LM calls (tracked around the step) and the usage of each sub-job that came back.

The resuming owner reads the workers topic (:func:`dead_owners_spend`): a previous owner whose
latest heartbeat still lists the optimization, was not ``final``, and is older than
:data:`SILENT_AFTER_S` died mid-step; what it listed goes into the checkpoint's ``unreported``
(keyed by :func:`~dspex.processors.aggregate_deaths.death_key`, so a second resume from the same
checkpoint does not count it twice) and the status's ``usage_unreported``, never into ``usage``.

DESIGN: a living owner that lost the job to a rebalance stops listing it at its next heartbeat
(its step is cancelled at once), so only a worker silent for longer than two heartbeat intervals is
taken for dead. The figure is that of the dead worker's last heartbeat: calls answered after it
are missing, and the sub-jobs the dead step had in flight keep running on the predictors and are
charged to their own evaluation jobs (their ``parent_job_id`` names the optimization), not here.
The worker sends a heartbeat as soon as a step is checkpointed, so a step is counted in both
``usage`` and ``usage_unreported`` only if the worker dies within that heartbeat's round trip.

    >>> ledger = UnreportedLedger()
    >>> with StepSpend(ledger, "opt-1") as spend:  # doctest: +SKIP
    ...     await run.step()  # the executor calls spend.add(usage) for each sub-job's results
    ...     await checkpoint_acknowledged()
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Any

from dspex.lm.usage import Usage
from dspex.processors.aggregate_deaths import death_key
from dspex.processors.heartbeat import HEARTBEAT_INTERVAL_S
from dspex.processors.unreported import UnreportedLedger
from dspex.schemas.base import utc_now
from dspex.schemas.common import UsageRecord
from dspex.schemas.workers import WorkerHeartbeat

__all__ = ["SILENT_AFTER_S", "StepSpend", "dead_owners_spend", "results_usage", "total_unreported"]

SILENT_AFTER_S = 2 * HEARTBEAT_INTERVAL_S
"""A previous owner whose latest heartbeat (still listing the optimization) is older than this when
the job is resumed is taken for dead: a living one sends one every interval."""


class StepSpend(AbstractContextManager["StepSpend"]):
    """One step of one optimization in an :class:`UnreportedLedger`: the LM calls made inside the
    block and every usage :meth:`add` ed, listed until the block exits (once the step's checkpoint
    was acknowledged, or the step abandoned)."""

    def __init__(self, ledger: UnreportedLedger, job_id: str) -> None:
        self._ledger, self._job_id = ledger, job_id
        self._run = ledger.run(job_id)
        self._held: list[int] = []

    def __enter__(self) -> StepSpend:
        self._run.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for key in self._held:
            self._ledger.release(key)
        self._held.clear()
        self._run.__exit__(*exc_info)

    def add(self, usage: Usage) -> None:
        """List the usage a sub-job's results reported (spent on the predictors)."""
        if usage.lm_calls:
            self._held.append(self._ledger.hold(self._job_id, usage))


def results_usage(results: list[Any]) -> Usage:
    """The usage the results of an executor call carry (predictions' or evaluation results')."""
    total = Usage()
    for result in results:
        usage = getattr(result, "usage", None)
        if isinstance(usage, Usage):
            total = total + usage
    return total


def dead_owners_spend(
    beats: dict[str, WorkerHeartbeat], job_id: str, *, me: str, now: dt.datetime | None = None
) -> dict[str, UsageRecord]:
    """``death key -> what it listed`` of the workers (other than ``me``, a death key) whose latest
    heartbeat lists ``job_id``, was not final and is older than :data:`SILENT_AFTER_S`."""
    now = now or utc_now()
    found: dict[str, UsageRecord] = {}
    for beat in beats.values():
        usage = beat.unreported.get(job_id)
        if usage is None or not usage.lm_calls or beat.final or death_key(beat) == me:
            continue
        if (now - beat.sent_at).total_seconds() > SILENT_AFTER_S:
            found[death_key(beat)] = usage
    return found


def total_unreported(shares: dict[str, UsageRecord]) -> UsageRecord | None:
    """The sum of ``shares`` (None when there is none)."""
    if not shares:
        return None
    total = UsageRecord()
    for usage in shares.values():
        total = total + usage
    return total
