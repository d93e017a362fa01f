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
  ``program.json``. Local or on the cluster, those metrics are also logged while it runs, with the
  examples done as the step (:mod:`~dspex.tracking.progress`), its final values at the step of the
  whole dataset;
- an **optimization** (a local compile, ``Client.optimize``, ``dspex optimize``, or each job of
  ``dspex worker optimize --mlflow-uri``): params ``optimizer``, ``seed``, each plain knob as
  ``knob.NAME`` (and the trainset's fingerprint, locally); the metric ``score`` with one step per
  trial (and ``best_score_so_far``), and at each trial's step the ``cost_usd``, ``total_tokens``
  and ``lm_calls`` spent so far and ``examples_per_s`` (logged as the trials come: by the worker,
  by ``Client.optimize`` and ``dspex optimize`` while they follow the job, by a local compile
  after each step; the whole run's usage follows at the step after the last trial); artifacts
  ``best_program.json`` and ``best_program.txt`` (its instructions and demos). The candidate
  evaluations of a local compile, and of a worker's optimization, are its child runs (none with
  ``MlflowSettings(nested_evaluations=False)``: only the optimization's run). A worker logs only
  to the server it was started with; a job cannot name one. A worker logs each trial as its step
  ends, into the run tagged with the job's id: an optimization another worker resumes (its first
  one was killed) goes on in the same run, after its last step.

MLflow's own client does the talking: ``mlflow-skinny``, the ``mlflow`` extra (``pip install
'dspex[mlflow]'``), imported only when MLflow logging is turned on.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from dspex.tracking.callback import PARENT_RUN, MlflowCallback
from dspex.tracking.logger import MlflowLogger
from dspex.tracking.optimization import (
    OptimizationFollower,
    opening_stub,
    status_content,
    status_points,
)
from dspex.tracking.progress import EvaluationProgress, LocalEvaluationProgress
from dspex.tracking.settings import MlflowSettings, resolve

__all__ = [
    "JOB_TAG",
    "MlflowCallback",
    "MlflowLogger",
    "MlflowSettings",
    "abandon_optimization",
    "active",
    "alog_submission",
    "begin_optimization",
    "enable",
    "evaluation_progress",
    "flush",
    "follow_optimization",
    "local_evaluation_progress",
    "log_evaluation",
    "log_optimization",
    "log_optimization_progress",
    "with_setting",
]

_CALLBACK_TYPE = MlflowCallback
JOB_TAG = "dspex.job_id"  # the tag that finds a worker's optimization run again on resume
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


def _nested_or_alone(callback: MlflowCallback) -> bool:
    """Whether an evaluation run here is logged: it is no optimization's candidate, or those are
    logged as child runs (``nested_evaluations``)."""
    return PARENT_RUN.get() is None or callback.logger.settings.nested_evaluations


def local_evaluation_progress() -> LocalEvaluationProgress | None:
    """What logs the progress of the local ``Evaluate`` call running here (fed each finished
    example), None when MLflow logging is off or does not log that evaluation."""
    callback = _installed()
    if callback is None:
        return None
    from dspex.utils.callback import ACTIVE_CALL_ID

    return callback.progress_of(ACTIVE_CALL_ID.get())  # inside Evaluate's call: its own call id


def evaluation_progress(submission: Any, started: float | None = None) -> EvaluationProgress | None:
    """What logs a cluster evaluation's progress while the client follows it (its ``on_status``),
    None when MLflow logging is off or does not log this evaluation (an optimization's candidate
    with ``nested_evaluations=False``). ``started``: when it was submitted
    (``time.perf_counter()``)."""
    callback = _installed()
    if callback is None or not _nested_or_alone(callback):
        return None
    from dspex.tracking.content import saved_program_name

    wanted = set(submission.program_ids)
    names = {spec.candidate_id: saved_program_name(spec.program) for spec in submission.specs}
    names = {program_id: name for program_id, name in names.items() if program_id in wanted}
    begun = time.perf_counter() if started is None else started
    return EvaluationProgress(callback.logger, names, PARENT_RUN.get(), begun)


async def alog_submission(
    submission: Any, results: Sequence[Any], progress: EvaluationProgress | None = None
) -> None:
    """Log each program's result of a cluster evaluation the client waited for (one run per
    distinct program, the one ``progress`` opened if it did), off the event loop; nothing when
    MLflow logging is off (or, for an optimization's candidates, ``nested_evaluations=False``).
    Its metrics are at the step of the whole dataset, after the progress."""
    callback = _installed()
    if callback is None or not _nested_or_alone(callback):
        return
    from dspex.configuration import current_settings
    from dspex.tracking.content import saved_evaluation_content

    programs = {spec.candidate_id: spec.program for spec in submission.specs}
    settings_lm, job = current_settings().lm, submission.job
    parent = PARENT_RUN.get()  # an optimization's candidate evaluations nest under its run
    opened = progress.runs if progress is not None else {}
    final_step, seen = len(submission.examples), set()
    for program_id, result in zip(submission.program_ids, results, strict=False):
        if program_id in seen or program_id not in programs:
            continue
        seen.add(program_id)
        content = saved_evaluation_content(
            programs[program_id], program_id, submission.examples, result,
            job_lm=job.lm, settings_lm=settings_lm, job_id=str(job.job_id),
        )  # fmt: skip
        content.metrics = [replace(point, step=final_step) for point in content.metrics]
        callback.logger.log(content, parent=parent, run=opened.get(program_id))


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

    content = status_content(
        status, best, knobs=knobs, seed=seed, trainset=trainset,
        settings_lm=current_settings().lm, live=opened is not None,
    )  # fmt: skip
    callback.logger.log(content, run=opened)


def begin_optimization(optimizer: str, job_id: str | None = None) -> None:
    """Open the run of an optimization this task runs (``dspex worker optimize``): the cluster
    evaluations of its candidates, logged as they end, become its child runs,
    :func:`log_optimization_progress` adds its trials as they come and :func:`log_optimization`
    completes it. With ``job_id``, the run is tagged ``dspex.job_id`` and a run of the experiment
    already so tagged (the job's first worker was killed) is continued instead of a new one.
    Nothing when MLflow logging is off."""
    callback = _installed()
    if callback is None:
        return
    resume = None if job_id is None else {"dspex.kind": "optimization", JOB_TAG: job_id}
    PARENT_RUN.set(callback.logger.start(opening_stub(optimizer), resume=resume))


def abandon_optimization() -> None:
    """End the run :func:`begin_optimization` opened as FAILED, nothing more logged (the
    optimization could not be followed to its end); nothing when none was opened."""
    callback, run = _installed(), PARENT_RUN.get()
    if run is None:
        return
    PARENT_RUN.set(None)
    if callback is not None:
        callback.logger.end(run, failed=True)


def log_optimization_progress(status: Any) -> None:
    """Add the trials of a running optimization's ``status`` (an ``OptimizeStatus``) to the run
    :func:`begin_optimization` opened, each at its step: its score, and the cost, tokens and LM
    calls spent and the examples per second so far, as the status says (the trials its run already
    holds are not sent again, so each keeps the numbers of the status that first reported it).
    Nothing when MLflow logging is off or no run was opened."""
    callback, run = _installed(), PARENT_RUN.get()
    if callback is None or run is None:
        return
    callback.logger.log_points(run, status_points(status), kind="optimization's progress")


def follow_optimization(optimizer: str) -> OptimizationFollower | None:
    """What logs an optimization a client follows (``Client.optimize``; its ``on_status``): its
    run opened now, its trials as statuses come; None when MLflow logging is off."""
    callback = _installed()
    return None if callback is None else OptimizationFollower(callback.logger, optimizer)
