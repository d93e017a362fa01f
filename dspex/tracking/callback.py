"""The callback that turns evaluations and compiles into MLflow runs (installed by
``dspex.configure(mlflow=...)``).

An evaluation (``Evaluate.__call__`` / ``acall``) becomes one run: its progress is logged while it
runs (:class:`~dspex.tracking.progress.LocalEvaluationProgress`, fed by ``Evaluate`` through
:meth:`MlflowCallback.progress_of`) and its results when it ends; a compile becomes a
run opened when it starts, so the evaluations of its candidates are logged as its child runs
(``mlflow.parentRunId``), and completed when it ends with each trial of the optimizer's history as a
step of the ``score`` metric and the best program as artifacts.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from dspex.optimizers.history import STEP_LISTENER
from dspex.tracking.content import (
    RunContent,
    Step,
    evaluation_content,
    optimization_content,
    step_metrics,
    usage_metrics,
)
from dspex.tracking.logger import MlflowLogger, RunRef
from dspex.tracking.progress import LocalEvaluationProgress
from dspex.utils.callback import BaseCallback

__all__ = ["PARENT_RUN", "MlflowCallback"]

logger = logging.getLogger("dspex.tracking")

# The run of the compile this code runs inside (its evaluations become child runs).
PARENT_RUN: contextvars.ContextVar[RunRef | None] = contextvars.ContextVar(
    "dspex_mlflow_parent", default=None
)


@dataclass
class _Evaluation:
    program: Any
    devset: list[Any]
    settings_lm: Any
    parent: RunRef | None
    progress: LocalEvaluationProgress | None  # None: not logged (a child run while nesting is off)


@dataclass
class _Compile:
    optimizer: Any
    trainset: list[Any] | None
    settings_lm: Any
    run: RunRef
    token: contextvars.Token[RunRef | None]
    steps: contextvars.Token[Any]


class MlflowCallback(BaseCallback):
    """Logs each evaluation and compile this process runs to MLflow through ``logger``."""

    def __init__(self, logger: MlflowLogger) -> None:
        self.logger = logger
        self._evaluations: dict[str, _Evaluation] = {}
        self._compiles: dict[str, _Compile] = {}
        self._lock = threading.Lock()

    # -- evaluations -------------------------------------------------------------------------------

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        parent = PARENT_RUN.get()
        devset = inputs.get("devset")
        if devset is None:
            devset = getattr(instance, "devset", None) or ()
        program, examples = inputs.get("program"), list(devset)
        progress = None
        if parent is None or self.logger.settings.nested_evaluations:
            name = type(program).__name__
            progress = LocalEvaluationProgress(self.logger, name, parent, len(examples))
        with self._lock:
            self._evaluations[call_id] = _Evaluation(program, examples, _lm(), parent, progress)

    def progress_of(self, call_id: str | None) -> LocalEvaluationProgress | None:
        """What logs the progress of the evaluation ``call_id`` (None: not one this logs)."""
        with self._lock:
            started = self._evaluations.get(call_id) if call_id is not None else None
        return None if started is None else started.progress

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            started = self._evaluations.pop(call_id, None)
        if started is None or started.progress is None:
            return
        opened = started.progress.run
        if outputs is None or exception is not None:
            if opened is not None:
                self.logger.end(opened, failed=True)
            return
        content = evaluation_content(
            started.program, started.devset, outputs, settings_lm=started.settings_lm
        )
        # the final values after the progress, at the step of the whole devset (as on the cluster)
        content.metrics = [replace(point, step=len(started.devset)) for point in content.metrics]
        self.logger.log(content, parent=started.parent, run=opened)

    # -- compiles ----------------------------------------------------------------------------------

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        optimizer = type(instance).__name__
        stub = RunContent(kind="optimization", name=f"{optimizer} optimize",
                          tags={"dspex.kind": "optimization", "mlflow.source.name": "dspex"})  # fmt: skip
        run = self.logger.start(stub, parent=PARENT_RUN.get())
        token = PARENT_RUN.set(run)
        steps = STEP_LISTENER.set(_TrialsLive(self.logger, run))
        trainset = inputs.get("trainset")
        with self._lock:
            self._compiles[call_id] = _Compile(
                instance, None if trainset is None else list(trainset), _lm(), run, token, steps
            )

    def on_compile_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            started = self._compiles.pop(call_id, None)
        if started is None:
            return
        # ended in another context than it started in: nothing to undo there
        with contextlib.suppress(ValueError):
            PARENT_RUN.reset(started.token)
        with contextlib.suppress(ValueError):
            STEP_LISTENER.reset(started.steps)
        optimizer = started.optimizer
        knobs = _knobs(optimizer)
        history = getattr(optimizer, "history", None)
        content = optimization_content(
            type(optimizer).__name__,
            knobs,
            _steps(history),
            outputs if exception is None else None,
            seed=knobs.get("seed") if isinstance(knobs.get("seed"), int) else None,
            usage=getattr(history, "usage", None),
            trainset=started.trainset,
            settings_lm=started.settings_lm,
            failed=exception is not None,
        )
        self.logger.log(content, run=started.run)


class _TrialsLive:
    """Logs a compile's trials to its run after each step of the optimizer: each trial's score,
    and the cost, tokens and LM calls spent so far and the examples per second since the start,
    at its step (the trials logged before are not sent again)."""

    def __init__(self, logger: MlflowLogger, run: RunRef) -> None:
        self._logger, self._run = logger, run
        self._started = time.perf_counter()

    def __call__(self, history: Any) -> None:
        try:
            steps = _steps(history)
            elapsed = time.perf_counter() - self._started
            points = step_metrics(steps) + usage_metrics(steps, history.usage, elapsed)
            self._logger.log_points(self._run, points, kind="optimization's progress")
        except Exception:  # never the compile's failure
            logger.warning("an optimization step was not logged to MLflow", exc_info=True)


def _lm() -> Any:
    from dspex.configuration import current_settings

    return current_settings().lm


def _knobs(optimizer: Any) -> dict[str, Any]:
    get_params = getattr(optimizer, "get_params", None)
    try:
        params = get_params() if callable(get_params) else vars(optimizer)
    except Exception:
        return {}
    return dict(params) if isinstance(params, dict) else {}


def _steps(history: Any) -> list[Step]:
    trials = getattr(history, "trials", None) or ()
    return [
        Step(
            step=index,
            score=trial.score,
            num_examples=int(trial.num_examples or 0),
            kind=str(trial.kind),
            best_so_far=trial.best_so_far,
            optimizer_step=int(trial.step),
        )
        for index, trial in enumerate(trials)
    ]
