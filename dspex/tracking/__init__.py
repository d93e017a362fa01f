"""MLflow tracking of evaluations and optimizations: each one can leave a run people compare and audit.

Off by default. ``dspex.configure(mlflow="http://mlflow:5000")`` (or an :class:`MlflowSettings`, or
``True`` for ``MLFLOW_TRACKING_URI``) turns it on in this process; ``--mlflow-uri`` does so for
``dspex eval`` and ``dspex optimize``. The tracking server is checked then: one that cannot be reached
is a one-line ConfigurationError naming the URI. A failure later (the server went away mid-run) never
fails or slows an evaluation: runs are sent from a background thread (in the order they were made;
:func:`flush` waits for them, and so does the process's exit, for a bounded time), and a failure is a
warning saying why the run was not logged.

What a run holds (see :mod:`~dspex.tracking.content`):

- an **evaluation** (local ``Evaluate``, a cluster ``Client.evaluate`` or ``dspex eval``): params
  ``program``, ``program_id``, ``model``, ``metric``, ``dataset_fingerprint``, ``num_examples`` (and
  ``job_id`` on the cluster); metrics ``score``, ``cost_usd``, tokens, ``lm_calls``, ``errors``,
  ``examples_per_s``; artifacts ``results.json`` (every example's inputs, outputs, score, error) and
  ``program.json``;
- an **optimization** (a local compile, ``dspex optimize``, or each job of ``dspex worker optimize
  --mlflow-uri``): params ``optimizer``, ``seed``, each plain knob as ``knob.NAME`` (and the
  trainset's fingerprint, locally); the metric ``score`` with one step per trial (and
  ``best_score_so_far``); artifacts ``best_program.json`` and ``best_program.txt`` (its instructions
  and demos). The candidate evaluations of a local compile, and of a worker's optimization, are its
  child runs. A worker logs only to the server it was started with; a job cannot name one.

MLflow's own client does the talking: ``mlflow-skinny``, the ``mlflow`` extra (``pip install
'dspex[mlflow]'``), imported only when MLflow logging is turned on.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.tracking.callback import PARENT_RUN, MlflowCallback
from dspex.tracking.logger import MlflowLogger
from dspex.tracking.settings import MlflowSettings, resolve

__all__ = [
    "MlflowCallback",
    "MlflowLogger",
    "MlflowSettings",
    "active",
    "alog_submission",
    "begin_optimization",
    "enable",
    "flush",
    "log_evaluation",
    "log_optimization",
    "with_setting",
]

_CALLBACK_TYPE = MlflowCallback
_active: MlflowCallback | None = None
_lock = threading.Lock()


def active() -> MlflowCallback | None:
    """The MLflow logging of this process, None when off."""
    return _active


def enable(value: Any) -> MlflowCallback | None:
    """Turn MLflow logging on as ``value`` says (see :func:`~dspex.tracking.settings.resolve`),
    replacing any logging already on; None when ``value`` turns it off. The server is checked
    first: one that cannot be reached is a ConfigurationError naming the URI (logging stays as it
    was). Prefer ``dspex.configure(mlflow=value)``, which also installs the callback."""
    settings = resolve(value)
    callback: MlflowCallback | None = None
    if settings is not None:
        logger = MlflowLogger(settings)
        try:
            logger.check()
        except BaseException:
            logger.close()
            raise
        callback = MlflowCallback(logger)
    global _active
    with _lock:
        previous, _active = _active, callback
    if previous is not None:
        previous.logger.close()
    return callback


def flush(timeout_s: float | None = None) -> bool:
    """Wait until the runs logged so far have been sent; False when that took over ``timeout_s``."""
    callback = _active
    return True if callback is None else callback.logger.flush(timeout_s)


@atexit.register
def _at_exit() -> None:
    # bounded: a server that never answers costs the exiting process a run's worth of timeouts
    callback = _active
    if callback is not None:
        callback.logger.close()


def with_setting(callbacks: Sequence[Any], value: Any) -> tuple[MlflowSettings | None, list[Any]]:
    """What ``configure(mlflow=value)`` stores: the settings in force (None: off) and ``callbacks``
    with the MLflow callback of the new settings in place of any earlier one."""
    callback = enable(value)
    kept = [installed for installed in callbacks if not isinstance(installed, _CALLBACK_TYPE)]
    if callback is None:
        return None, kept
    return callback.logger.settings, [*kept, callback]


def log_evaluation(program: Any, devset: Sequence[Any], result: Any, *, job_id: str | None = None) -> None:
    """Log an evaluation's ``result`` of ``program`` as a run, when MLflow logging is on (for an
    evaluation that ran outside ``Evaluate``, which logs its own)."""
    from dspex.configuration import current_settings
    from dspex.tracking.content import evaluation_content

    callback = _installed()
    if callback is not None:
        content = evaluation_content(
            program, devset, result, settings_lm=current_settings().lm, job_id=job_id
        )
        callback.logger.log(content)


def _installed() -> MlflowCallback | None:
    """The MLflow logging of this process while ``configure(mlflow=...)`` has it on (None: off)."""
    from dspex.configuration import current_settings

    return _active if current_settings().mlflow is not None else None


async def alog_submission(submission: Any, results: Sequence[Any]) -> None:
    """Log each program's result of a cluster evaluation the client waited for (one run per
    distinct program), off the event loop; nothing when MLflow logging is off."""
    callback = _installed()
    if callback is None:
        return
    from dspex.configuration import current_settings
    from dspex.tracking.content import saved_evaluation_content

    programs = {spec.candidate_id: spec.program for spec in submission.specs}
    settings_lm, job = current_settings().lm, submission.job
    contents, seen = [], set()
    for program_id, result in zip(submission.program_ids, results, strict=False):
        if program_id in seen or program_id not in programs:
            continue
        seen.add(program_id)
        contents.append(
            saved_evaluation_content(
                programs[program_id], program_id, submission.examples, result,
                job_lm=job.lm, settings_lm=settings_lm, job_id=str(job.job_id),
            )
        )  # fmt: skip
    parent = PARENT_RUN.get()  # an optimization's candidate evaluations nest under its run
    for content in contents:
        callback.logger.log(content, parent=parent)


def log_optimization(
    status: Any,
    best: Any,
    *,
    knobs: Mapping[str, Any],
    seed: int | None = None,
    trainset: Sequence[Any] | None = None,
) -> None:
    """Log a cluster optimization (its terminal ``OptimizeStatus``, the ``best`` program) as a run,
    when MLflow logging is on: each step of the status is a step of the ``score`` metric."""
    callback = _installed()
    opened = PARENT_RUN.get()
    if opened is not None:
        PARENT_RUN.set(None)  # this optimization's run ends here
    if callback is None:
        return
    from dspex.configuration import current_settings
    from dspex.tracking.content import Step, optimization_content

    steps = [
        Step(index, record.score, record.num_examples, record.kind, optimizer_step=record.step)
        for index, record in enumerate(status.steps)
    ]
    content = optimization_content(
        str(status.optimizer), knobs, steps, best, seed=seed, usage=status.usage, trainset=trainset,
        job_id=str(status.job_id), settings_lm=current_settings().lm, failed=status.state != "completed",
    )  # fmt: skip
    callback.logger.log(content, run=opened)


def begin_optimization(optimizer: str) -> None:
    """Open the run of an optimization this task runs (``dspex worker optimize``): the cluster
    evaluations of its candidates, logged as they end, become its child runs, and
    :func:`log_optimization` completes it. Nothing when MLflow logging is off."""
    callback = _installed()
    if callback is None:
        return
    from dspex.tracking.content import SOURCE_TAG, RunContent

    stub = RunContent(kind="optimization", name=f"{optimizer} optimize",
                      tags={"dspex.kind": "optimization", "mlflow.source.name": SOURCE_TAG})  # fmt: skip
    PARENT_RUN.set(callback.logger.start(stub))
