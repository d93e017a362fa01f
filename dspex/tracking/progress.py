"""An evaluation's metrics over time: while it runs, each program's running score, cost, tokens,
errors and throughput become steps of its MLflow run (the step is the number of its examples
done): a cluster evaluation's from the statuses the client follows anyway
(:class:`EvaluationProgress`), a local ``Evaluate``'s from its examples as they finish
(:class:`LocalEvaluationProgress`).

Bounded: a point at most every :data:`MIN_INTERVAL_S` and only once :data:`MAX_POINTS`-th of the
examples more are done, so a run holds at most about that many progress points, however long the
evaluation. Cheap on the event loop: a point is a few numbers handed to the logger's sender thread
(one ``log_batch`` each), never a request made here. The run is opened with the first point (an
evaluation over before its first status opens its run at the end, as before), and its final
metrics follow at the step of the whole dataset.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dspex.tracking.content import SOURCE_TAG, MetricPoint, RunContent
from dspex.tracking.logger import MlflowLogger, RunRef

__all__ = ["MAX_POINTS", "MIN_INTERVAL_S", "EvaluationProgress", "LocalEvaluationProgress"]

MAX_POINTS: Final = 50
MIN_INTERVAL_S: Final = 0.5


class EvaluationProgress:
    """Sees each status of one evaluation job (``on_status`` of its follow) and logs the progress
    of each of its programs (``names``: candidate id -> program class) to a run of its own, a
    child of ``parent``. ``started``: when the job was submitted (``time.perf_counter()``)."""

    def __init__(
        self, logger: MlflowLogger, names: Mapping[str, str], parent: RunRef | None, started: float
    ) -> None:
        self.runs: dict[str, RunRef] = {}
        self._logger = logger
        self._names = dict(names)
        self._parent = parent
        self._started = started
        self._last: dict[str, tuple[int, float]] = {}

    def __call__(self, status: Any) -> None:
        if getattr(status, "kind", None) != "eval" or status.finished:
            return  # the end is the final run's, logged from the result
        now = time.perf_counter()
        for aggregate in status.candidates:
            if self._due(aggregate, now):
                self._log(aggregate, now)

    def abandon(self) -> None:
        """End the runs opened so far as FAILED (the evaluation failed or was not waited for)."""
        for run in self.runs.values():
            self._logger.end(run, failed=True)
        self.runs.clear()

    def _due(self, aggregate: Any, now: float) -> bool:
        if aggregate.candidate_id not in self._names:
            return False
        last_done, last_at = self._last.get(aggregate.candidate_id, (0, float("-inf")))
        return _due(aggregate.done, aggregate.total, last_done, last_at, now)

    def _log(self, aggregate: Any, now: float) -> None:
        candidate = aggregate.candidate_id
        self._last[candidate] = (aggregate.done, now)
        run = self.runs.get(candidate)
        if run is None:
            run = self.runs[candidate] = self._logger.start(_stub(self._names[candidate]), self._parent)
        points = progress_points(aggregate, max(now - self._started, 1e-9))
        self._logger.log_points(run, points, kind="evaluation's progress")


class LocalEvaluationProgress:
    """Fed each finished example of one local evaluation (``Evaluate``'s progress, with the
    running totals), logs its progress to a run of its own (:attr:`run`, opened with the first
    point), a child of ``parent``. The first point waits :data:`MIN_INTERVAL_S` after the start,
    so an evaluation shorter than that costs no request more than its final run."""

    def __init__(self, logger: MlflowLogger, program: str, parent: RunRef | None, total: int) -> None:
        self.run: RunRef | None = None
        self._logger = logger
        self._program = program
        self._parent = parent
        self._total = total
        self._started = time.perf_counter()
        self._last = (0, self._started)

    def __call__(self, *, done: int, score_sum: float, errors: int, usage: Any) -> None:
        now = time.perf_counter()
        if not _due(done, self._total, *self._last, now):
            return
        self._last = (done, now)
        if self.run is None:
            self.run = self._logger.start(_stub(self._program), self._parent)
        running = _Running(done, round(100.0 * score_sum / done, 2), errors, usage)
        points = progress_points(running, max(now - self._started, 1e-9))
        self._logger.log_points(self.run, points, kind="evaluation's progress")


@dataclass(frozen=True)
class _Running:
    """A local evaluation's running totals, read as a cluster ``CandidateAggregate`` is."""

    done: int
    score: float
    errors: int
    usage: Any


def _due(done: int, total: int, last_done: int, last_at: float, now: float) -> bool:
    """Whether a point at ``done`` of ``total`` examples is due: some, not all, are done, a
    :data:`MAX_POINTS`-th of them more than at the last point, :data:`MIN_INTERVAL_S` later."""
    if not 0 < done < total:
        return False
    every = max(1, total // MAX_POINTS)
    return done - last_done >= every and now - last_at >= MIN_INTERVAL_S


def progress_points(aggregate: Any, elapsed_s: float) -> list[MetricPoint]:
    """A program's running metrics (a ``CandidateAggregate``) at the step of its examples done."""
    step, usage = int(aggregate.done), aggregate.usage
    values = {
        "score": aggregate.score,
        "cost_usd": usage.cost_usd,
        "total_tokens": usage.total_tokens,
        "lm_calls": usage.lm_calls,
        "errors": aggregate.errors,
        "processed": aggregate.done,
        "examples_per_s": aggregate.done / elapsed_s,
    }
    return [MetricPoint(key, float(value), step=step) for key, value in values.items()]


def _stub(program: str) -> RunContent:
    return RunContent(
        kind="evaluation",
        name=f"{program} eval",
        tags={"dspex.kind": "evaluation", "mlflow.source.name": SOURCE_TAG},
    )
