"""The progress bar of a job followed through its status: done/total, score, tokens, cost, rate."""

from __future__ import annotations

import math
from types import TracebackType

from dspex.evaluate.display import ProgressBar
from dspex.schemas import JobStatus, OptimizeStatus

__all__ = ["JobProgress", "running_score"]


def running_score(status: JobStatus) -> float:
    """100 x the mean score over every candidate's examples done so far."""
    done = sum(c.done for c in status.candidates)
    return 100.0 * math.fsum(c.score_sum for c in status.candidates) / done if done else 0.0


class JobProgress:
    """A bar on stderr fed with JobStatus updates; does nothing when ``enabled`` is False."""

    def __init__(self, job_id: str, total: int, *, enabled: bool, label: str | None = None) -> None:
        self._total = total
        # total 0 (an optimization's, unknown up front) must stay unknown: rich would show it as
        # finished (n/0) and stop its clock.
        self._bar = ProgressBar(
            label or f"job {job_id[:12]}", total or None, enabled=enabled, unit="tasks/s", with_state=True
        )

    def __enter__(self) -> JobProgress:
        self._bar.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.__exit__(exc_type, exc, tb)

    def update(self, status: JobStatus) -> None:
        """Show ``status``."""
        self._bar.show(
            done=status.done,
            total=status.total_tasks or self._total,
            score=running_score(status),
            errors=status.errors,
            tokens=status.usage.total_tokens,
            cost=status.usage.cost_usd,
            state=status.state,
        )

    def update_optimization(self, status: OptimizeStatus) -> None:
        """Show an optimization's ``status``: steps done, best score so far, tokens, cost."""
        self._bar.show(
            done=len(status.steps),
            total=None,  # an optimizer's number of steps is not known up front
            score=status.best_score or 0.0,
            errors=0,
            tokens=status.usage.total_tokens,
            cost=status.usage.cost_usd,
            state=status.state,
        )
