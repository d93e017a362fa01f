"""Turning a prediction into its score record: the part the scorer and the predictor share.

The scorer (``dspex worker score``) scores every prediction it reads from the predictions topic. A
predictor scores its own predictions instead when the job's metric is a built-in
(``MetricSpec(kind="builtin")``, e.g. ``exact_match:answer``) and it was not told otherwise
(``--no-inline-builtin-metrics``): a built-in is a pure, cheap function of the example and the
outputs, and dspex's own code, so running it where the prediction is made costs less than the
metric saves: no prediction produced, consumed, encoded and decoded, nor stored by the broker.
Imported metrics (``kind="import"``, from ``--allow-module`` modules) and LM judges keep going
through the scorer, whose scaling and security policy are there for them.

Both produce the same :class:`~dspex.schemas.ScoreRecord` through :func:`score_prediction`;
``source`` says who scored it (``"scorer"`` or ``"predictor"``):

* a prediction that carries an error scores the job's ``failure_score`` with that error (its
  ``systemic`` flag too, which fails the job), and its metric is not built;
* else ``score = metric(example, prediction)``; a metric that raises scores ``failure_score`` with
  its error kept, never systemic (one example's metric failing says nothing about the others).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from dspex.errors import MetricError, PoisonMessageError, SecurityPolicyError
from dspex.ids import content_id
from dspex.metrics import metric_from_spec, resolve_metric, score_of
from dspex.observability.tracing import kafka as tracing_kafka
from dspex.primitives import Example, Prediction
from dspex.processors.common import DLQ_REASON_UNKNOWN_METRIC, Worker, error_info
from dspex.schemas.common import MetricSpec
from dspex.schemas.dlq import DLQ_REASON_SECURITY_POLICY
from dspex.schemas.jobs import EvalJob
from dspex.schemas.results import PredictionRecord, ScoreRecord

__all__ = ["MetricBook", "MetricFn", "produce_score", "score_prediction", "scored"]

logger = logging.getLogger(__name__)

MetricFn = Callable[..., Any]
_JOBS_REMEMBERED = 1024


class MetricBook:
    """Metrics built once per spec, with each job's at hand.

    ``allow_modules``: where imported metrics may come from (the worker's security policy).
    """

    def __init__(self, allow_modules: tuple[str, ...]) -> None:
        self._allow_modules = allow_modules
        self._metrics: dict[str, MetricFn | PoisonMessageError] = {}
        self._by_job: dict[str, tuple[MetricSpec, MetricFn]] = {}  # no content id per prediction

    def metric(self, spec: MetricSpec) -> MetricFn:
        """The metric of ``spec``, built once (PoisonMessageError when it cannot or may not be)."""
        key = content_id(spec.model_dump(mode="json"))
        if key not in self._metrics:
            self._metrics[key] = self._build(spec)
        found = self._metrics[key]
        if isinstance(found, PoisonMessageError):
            raise PoisonMessageError(str(found), reason=found.reason)
        return found

    def of_job(self, job: EvalJob) -> MetricFn:
        """``job``'s metric (PoisonMessageError as :meth:`metric`)."""
        # The job cache hands out the same EvalJob object for every task and prediction of a job.
        known = self._by_job.get(job.job_id)
        if known is not None and known[0] is job.metric:
            return known[1]
        metric = self.metric(job.metric)
        if len(self._by_job) >= _JOBS_REMEMBERED:
            self._by_job.clear()
        self._by_job[job.job_id] = (job.metric, metric)
        return metric

    def _build(self, spec: MetricSpec) -> MetricFn | PoisonMessageError:
        try:
            return _resolve(spec, self._allow_modules)
        except SecurityPolicyError as exc:
            return PoisonMessageError(f"metric refused: {exc}", reason=DLQ_REASON_SECURITY_POLICY)
        except MetricError as exc:
            return PoisonMessageError(f"metric cannot be built: {exc}", reason=DLQ_REASON_UNKNOWN_METRIC)


async def produce_score(
    worker: Worker,
    carrier: Any,
    record: PredictionRecord,
    job: EvalJob,
    metric_of: Callable[[EvalJob], MetricFn],
    *,
    source: str,
) -> None:
    """Score ``record`` (:func:`score_prediction`) inside the metric's span, ``dspex.score`` in the
    example's trace continued from ``carrier``'s headers (a consumed message, or what stands for the
    span current here), and produce the score record to the scores topic."""
    with tracing_kafka.continued(carrier, "dspex.score", record, evaluator=True) as span:
        score = await score_prediction(record, job, metric_of, source=source, worker_id=worker.worker_id)
        span.set("dspex.score", score.score)
        if score.error is not None:
            span.failed(f"{score.error.type}: {score.error.message}")
        await worker.produce("scores", score)


async def score_prediction(
    record: PredictionRecord,
    job: EvalJob,
    metric_of: Callable[[EvalJob], MetricFn],
    *,
    source: str,
    worker_id: str,
) -> ScoreRecord:
    """The ScoreRecord of ``record`` under ``job``'s metric (see the module docs).

    ``metric_of`` gives the job's metric, asked only for a prediction without an error; what it
    raises (PoisonMessageError: dead-letter the prediction) goes through.
    """
    if record.error is not None:
        return scored(record, job.failure_score, source=source, worker_id=worker_id, error=record.error)
    metric = metric_of(job)
    try:
        value = metric(Example(record.example), Prediction(record.outputs or {}))
        score, feedback = score_of(await value if inspect.isawaitable(value) else value)
    except Exception as exc:  # a metric that raises scores failure_score, with its error kept
        logger.debug("metric %s failed on %s", job.metric.name, record.task_id, exc_info=exc)
        error = error_info(exc).model_copy(update={"systemic": False})
        return scored(record, job.failure_score, source=source, worker_id=worker_id, error=error)
    return scored(record, score, source=source, worker_id=worker_id, feedback=feedback)


def scored(
    record: PredictionRecord, score: float, *, source: str, worker_id: str, **fields: Any
) -> ScoreRecord:
    """``record``'s ScoreRecord with ``score`` (``fields``: its error or feedback) by ``worker_id``."""
    return ScoreRecord(
        job_id=record.job_id,
        candidate_id=record.candidate_id,
        example_index=record.example_index,
        task_id=record.task_id,
        outputs=record.outputs,
        score=score,
        trace=record.trace,
        callback_events=record.callback_events,
        tool_calls=record.tool_calls,
        lm_call_log=record.lm_call_log,
        lm_calls_unlogged=record.lm_calls_unlogged,
        predicted_by=record.worker_id,
        usage=record.usage,
        latency_s=record.latency_s,
        example=record.example,
        source=source,
        # the prediction's: the aggregator charges each run of a task once (see ScoreRecord)
        attempt_id=record.attempt_id,
        worker_id=worker_id,
        **fields,
    )


def _resolve(spec: MetricSpec, allow_modules: tuple[str, ...]) -> MetricFn:
    if spec.kind == "judge":
        raise MetricError(f"LM-judge metric {spec.name!r}: judge metrics are not supported by workers yet")
    if spec.kind == "builtin":
        return metric_from_spec({"metric": spec.name, **spec.options} if spec.options else spec.name)
    return resolve_metric(spec.name, allow_modules=allow_modules)
