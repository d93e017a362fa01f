"""The progress bar of a job followed through its status: done/total, score, tokens, cost, rate."""

from __future__ import annotations

import math
import time
from types import TracebackType
from typing import Any

from dspex.schemas import JobStatus, OptimizeStatus

__all__ = ["JobProgress", "running_score"]


def running_score(status: JobStatus) -> float:
    """100 x the mean score over every candidate's examples done so far."""
    done = sum(c.done for c in status.candidates)
    return 100.0 * math.fsum(c.score_sum for c in status.candidates) / done if done else 0.0


class JobProgress:
    """A rich bar on stderr fed with JobStatus updates; does nothing when ``enabled`` is False."""

    def __init__(self, job_id: str, total: int, *, enabled: bool, label: str | None = None) -> None:
        self._bar: Any = _progress_bar() if enabled else None
        self._task: Any = None
        self._total = total
        self._label = label or f"job {job_id[:12]}"
        self._started = time.perf_counter()

    def __enter__(self) -> JobProgress:
        if self._bar is not None:
            self._bar.start()
            fields = {"score": 0.0, "errors": 0, "tokens": 0, "cost": 0.0, "rate": 0.0, "state": "pending"}
            self._task = self._bar.add_task(self._label, total=self._total, **fields)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, status: JobStatus) -> None:
        """Show ``status``."""
        if self._bar is None:
            return
        elapsed = time.perf_counter() - self._started
        self._bar.update(
            self._task,
            completed=status.done,
            total=status.total_tasks or self._total,
            score=running_score(status),
            errors=status.errors,
            tokens=status.usage.total_tokens,
            cost=status.usage.cost_usd,
            rate=status.done / elapsed if elapsed > 0 else 0.0,
            state=status.state,
        )

    def update_optimization(self, status: OptimizeStatus) -> None:
        """Show an optimization's ``status``: steps done, best score so far, tokens, cost."""
        if self._bar is None:
            return
        elapsed = time.perf_counter() - self._started
        steps = len(status.steps)
        self._bar.update(
            self._task,
            completed=steps,
            total=None,  # an optimizer's number of steps is not known up front
            score=status.best_score or 0.0,
            errors=0,
            tokens=status.usage.total_tokens,
            cost=status.usage.cost_usd,
            rate=steps / elapsed if elapsed > 0 else 0.0,
            state=status.state,
        )


def _progress_bar() -> Any:
    # rich only when a bar is asked for
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[state]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("score {task.fields[score]:.1f}%"),
        TextColumn("errors {task.fields[errors]}"),
        TextColumn("{task.fields[tokens]:,} tokens"),
        TextColumn("${task.fields[cost]:.4f}"),
        TextColumn("{task.fields[rate]:.0f} tasks/s"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        refresh_per_second=4,
    )
