"""What a predictor's LM has answered that no record it produced carries yet, per job.

A task's LM calls are charged by the record its run produces: the prediction, or a usage report
when the run is cancelled. Between an answer and that record being acknowledged, a kill -9 loses
them: the task runs again elsewhere with calls of its own. The predictor's heartbeats carry this
ledger's :meth:`UnreportedLedger.snapshot`, so an aggregator that sees its heartbeats stop can say
how many calls went uncharged (:mod:`dspex.processors.aggregate_deaths`).

    >>> ledger = UnreportedLedger()
    >>> with ledger.run("job-1") as tracker:  # every LM call inside is tracked and listed  # doctest: +SKIP
    ...     await run_and_produce(task)
    >>> ledger.snapshot()  # {} again once the run's record was produced
    {}
"""

from __future__ import annotations

import itertools
from contextlib import AbstractContextManager
from typing import Any

from dspex.lm import Usage, track_usage
from dspex.lm.usage import UsageTracker
from dspex.schemas.common import UsageRecord

__all__ = ["UnreportedLedger", "usage_record"]


class UnreportedLedger:
    """The usage of runs not yet reported, by job (runs on one event loop; see the module docs)."""

    def __init__(self) -> None:
        self._runs: dict[str, set[UsageTracker]] = {}
        self._held: dict[int, tuple[str, Usage]] = {}
        self._ids = itertools.count()

    def run(self, job_id: str) -> AbstractContextManager[UsageTracker]:
        """Track the LM calls made inside the block for ``job_id``, listed until the block exits
        (exit only once the run's record was acknowledged)."""
        return _Run(self, job_id)

    def hold(self, job_id: str, usage: Usage) -> int:
        """List ``usage`` (a record being sent on its own) until :meth:`release` of the returned id."""
        key = next(self._ids)
        self._held[key] = (job_id, usage)
        return key

    def release(self, key: int) -> None:
        """Stop listing what :meth:`hold` listed."""
        self._held.pop(key, None)

    def snapshot(self) -> dict[str, UsageRecord]:
        """Per job with any, the LM calls answered and not yet reported (what heartbeats carry)."""
        sums: dict[str, Usage] = {}
        for job_id, trackers in self._runs.items():
            for tracker in trackers:
                _add(sums, job_id, tracker.usage)
        for job_id, usage in self._held.values():
            _add(sums, job_id, usage)
        return {job_id: usage_record(usage) for job_id, usage in sums.items()}

    def _open(self, job_id: str, tracker: UsageTracker) -> None:
        self._runs.setdefault(job_id, set()).add(tracker)

    def _close(self, job_id: str, tracker: UsageTracker) -> None:
        trackers = self._runs.get(job_id)
        if trackers is not None:
            trackers.discard(tracker)
            if not trackers:
                del self._runs[job_id]


class _Run(AbstractContextManager[UsageTracker]):
    # A plain class rather than @contextmanager: a predictor opens one per task.
    __slots__ = ("_job_id", "_ledger", "_tracker", "_tracking")

    def __init__(self, ledger: UnreportedLedger, job_id: str) -> None:
        self._ledger, self._job_id = ledger, job_id
        self._tracker = UsageTracker()
        self._tracking = track_usage(self._tracker)

    def __enter__(self) -> UsageTracker:
        self._tracking.__enter__()
        self._ledger._open(self._job_id, self._tracker)
        return self._tracker

    def __exit__(self, *exc_info: Any) -> None:
        self._ledger._close(self._job_id, self._tracker)
        self._tracking.__exit__(*exc_info)


def _add(sums: dict[str, Usage], job_id: str, usage: Usage) -> None:
    if usage.lm_calls:
        before = sums.get(job_id)
        sums[job_id] = usage if before is None else before + usage


def usage_record(usage: Usage) -> UsageRecord:
    """``usage`` as it travels on a topic (a prediction's, a usage report's, a heartbeat's)."""
    return UsageRecord(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd,
        lm_calls=usage.lm_calls,
        cache_hits=usage.cache_hits,
    )
