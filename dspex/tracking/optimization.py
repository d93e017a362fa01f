"""A cluster optimization's run, built from its statuses (``OptimizeStatus``): each trial a step
of ``score``, with the usage spent so far and the throughput at the same step, and the whole run
once it ends. Used by the worker that runs it, by ``dspex optimize`` and by ``Client.optimize``
while they follow it (:class:`OptimizationFollower`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dspex.tracking.content import (
    SOURCE_TAG,
    MetricPoint,
    RunContent,
    Step,
    optimization_content,
    step_metrics,
    usage_metrics,
)
from dspex.tracking.logger import MlflowLogger, RunRef

__all__ = ["OptimizationFollower", "opening_stub", "status_content", "status_points", "status_steps"]


def status_steps(status: Any) -> list[Step]:
    """The trials of ``status``, each at its place in the history."""
    return [
        Step(index, record.score, record.num_examples, record.kind, optimizer_step=record.step)
        for index, record in enumerate(status.steps)
    ]


def elapsed_s(status: Any) -> float | None:
    """How long the optimization has run, by its status (None: not said)."""
    started = getattr(status, "started_at", None)
    return None if started is None else (status.updated_at - started).total_seconds()


def status_points(status: Any) -> list[MetricPoint]:
    """The trials of a running optimization's ``status`` as points: score, and the cost, tokens,
    LM calls and examples per second so far, at each trial's step."""
    steps = status_steps(status)
    return step_metrics(steps) + usage_metrics(steps, status.usage, elapsed_s(status))


def status_content(
    status: Any,
    best: Any,
    *,
    knobs: Mapping[str, Any],
    seed: int | None,
    trainset: Sequence[Any] | None,
    settings_lm: Any,
    live: bool,
) -> RunContent:
    """The whole run of the optimization whose terminal status is ``status``; ``live``: its
    progress was logged as it came (then the usage at each trial its progress did not see too)."""
    steps = status_steps(status)
    content = optimization_content(
        str(status.optimizer), knobs, steps, best, seed=seed, usage=status.usage,
        trainset=trainset, job_id=str(status.job_id), settings_lm=settings_lm,
        failed=status.state != "completed",
    )  # fmt: skip
    if live:  # first: a run takes a metric's points in step order (its whole usage is at the last)
        content.metrics = usage_metrics(steps, status.usage, elapsed_s(status)) + content.metrics
    return content


def opening_stub(optimizer: str) -> RunContent:
    """What an optimization's run is opened with, before anything is logged into it."""
    tags = {"dspex.kind": "optimization", "mlflow.source.name": SOURCE_TAG}
    return RunContent(kind="optimization", name=f"{optimizer} optimize", tags=tags)


class OptimizationFollower:
    """An optimization a client follows (``on_status`` of its follow): its run opened at once,
    its trials logged as statuses come, completed by :meth:`completed` or :meth:`abandon`."""

    def __init__(self, logger: MlflowLogger, optimizer: str) -> None:
        self._logger = logger
        self.run: RunRef = logger.start(opening_stub(optimizer))
        self.last: Any = None  # the latest optimization status seen

    def __call__(self, status: Any) -> None:
        if getattr(status, "kind", None) != "optimize":
            return
        self.last = status
        if not status.finished:
            self._logger.log_points(self.run, status_points(status), kind="optimization's progress")

    def completed(
        self, best: Any, *, knobs: Mapping[str, Any], seed: int | None, trainset: Sequence[Any] | None
    ) -> None:
        """Log the whole run from the terminal status seen (``best``: the best program, if any)."""
        from dspex.configuration import current_settings

        if self.last is None or not self.last.finished:
            self.abandon()
            return
        content = status_content(
            self.last, best, knobs=knobs, seed=seed, trainset=trainset,
            settings_lm=current_settings().lm, live=True,
        )  # fmt: skip
        self._logger.log(content, run=self.run)

    def abandon(self) -> None:
        """End the run as FAILED with nothing more logged (it could not be followed to its end)."""
        self._logger.end(self.run, failed=True)
