"""The scorer worker: predictions in, scores out (``dspex worker score``).

For each PredictionRecord (consumer group ``<prefix>score``):

1. find its job (the jobs topic, followed from the beginning) for the metric and the failure score;
   a job that never appears dead-letters the prediction (reason ``unknown_job``);
2. build the job's metric once: a built-in by name (``exact_match:answer``), or a function by import
   path from an allowed module; one outside ``--allow-module`` dead-letters (``security_policy``), one
   that does not exist too (``unknown_metric``); both mark the job's error score systemic;
3. a prediction that carries an error scores the job's ``failure_score`` with the error kept (its
   ``systemic`` flag too, which fails the job); else ``score = metric(example, prediction)``, and a
   metric that raises scores ``failure_score`` with its error kept;
4. produce the ScoreRecord keyed by job id (one partition holds all of a job's results).

LM-judge metrics (``MetricSpec(kind="judge")``) are not run by this scorer yet: they dead-letter as
``unknown_metric``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from dspex.errors import ConfigurationError, MetricError, PoisonMessageError, SecurityPolicyError
from dspex.ids import content_id
from dspex.metrics import metric_from_spec, resolve_metric, score_of
from dspex.observability.tracing import kafka as tracing_kafka
from dspex.primitives import Example, Prediction
from dspex.processors.common import (
    DLQ_REASON_UNKNOWN_JOB,
    DLQ_REASON_UNKNOWN_METRIC,
    Outcome,
    Worker,
    WorkerOptions,
    error_info,
)
from dspex.schemas.common import MetricSpec
from dspex.schemas.dlq import DLQ_REASON_SECURITY_POLICY
from dspex.schemas.jobs import EvalJob
from dspex.schemas.results import SCORE_SOURCE_SCORER, PredictionRecord, ScoreRecord
from dspex.streams.config import KafkaSettings

__all__ = ["Scorer"]

logger = logging.getLogger(__name__)

MetricFn = Callable[..., Any]
_JOBS_REMEMBERED = 1024


class Scorer(Worker):
    """Scores predictions with their job's metric (see the module docs)."""

    kind = "score"
    input_role = "predictions"
    input_model = PredictionRecord

    def __init__(self, settings: KafkaSettings, options: WorkerOptions | None = None) -> None:
        super().__init__(settings, options)
        self._metrics: dict[str, MetricFn | PoisonMessageError] = {}
        self._by_job: dict[str, tuple[MetricSpec, MetricFn]] = {}  # no content id per prediction

    async def handle(self, message: Message, value: Any) -> Outcome:
        record: PredictionRecord = value
        job = await self._job(record)
        # the metric's span, in the example's trace (when tracing is on)
        with tracing_kafka.continued(message, "dspex.score", record, evaluator=True) as span:
            score = await self.score(record, job)
            span.set("dspex.score", score.score)
            if score.error is not None:
                span.failed(f"{score.error.type}: {score.error.message}")
            await self.produce("scores", score)
        return "ok"

    async def score(self, record: PredictionRecord, job: EvalJob) -> ScoreRecord:
        """The ScoreRecord of ``record`` under ``job``'s metric (PoisonMessageError: dead-letter it)."""
        if record.error is not None:
            return self._scored(record, job.failure_score, error=record.error)
        metric = self._job_metric(job)
        try:
            value = metric(Example(record.example), Prediction(record.outputs or {}))
            score, feedback = score_of(await value if inspect.isawaitable(value) else value)
        except Exception as exc:  # a metric that raises scores failure_score, with its error kept
            logger.debug("metric %s failed on %s", job.metric.name, record.task_id, exc_info=exc)
            # Never systemic: one example's metric failing says nothing about the others.
            error = error_info(exc).model_copy(update={"systemic": False})
            return self._scored(record, job.failure_score, error=error)
        return self._scored(record, score, feedback=feedback)

    def metric(self, spec: MetricSpec) -> MetricFn:
        """The metric of ``spec``, built once (PoisonMessageError when it cannot or may not be)."""
        key = content_id(spec.model_dump(mode="json"))
        if key not in self._metrics:
            self._metrics[key] = self._build_metric(spec)
        found = self._metrics[key]
        if isinstance(found, PoisonMessageError):
            raise PoisonMessageError(str(found), reason=found.reason)
        return found

    def _job_metric(self, job: EvalJob) -> MetricFn:
        # The job cache hands out the same EvalJob object for every prediction of a job.
        known = self._by_job.get(job.job_id)
        if known is not None and known[0] is job.metric:
            return known[1]
        metric = self.metric(job.metric)
        if len(self._by_job) >= _JOBS_REMEMBERED:
            self._by_job.clear()
        self._by_job[job.job_id] = (job.metric, metric)
        return metric

    async def _job(self, record: PredictionRecord) -> EvalJob:
        if self.jobs is None:
            raise ConfigurationError("the score worker is not running")
        job = await self.jobs.wait_job(record.job_id, self.options.job_wait_s)
        if job is None:
            raise PoisonMessageError(
                f"job {record.job_id} is not on {self.registry.name('jobs')} (waited "
                f"{self.options.job_wait_s:g} s); publish the job before its tasks",
                reason=DLQ_REASON_UNKNOWN_JOB,
            )
        return job

    def _build_metric(self, spec: MetricSpec) -> MetricFn | PoisonMessageError:
        try:
            metric = _resolve(spec, self.options.policy.modules)
        except SecurityPolicyError as exc:
            return PoisonMessageError(f"metric refused: {exc}", reason=DLQ_REASON_SECURITY_POLICY)
        except MetricError as exc:
            return PoisonMessageError(f"metric cannot be built: {exc}", reason=DLQ_REASON_UNKNOWN_METRIC)
        return metric

    def _scored(self, record: PredictionRecord, score: float, **fields: Any) -> ScoreRecord:
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
            source=SCORE_SOURCE_SCORER,
            attempt_id=record.attempt_id,
            worker_id=self.worker_id,
            **fields,
        )


def _resolve(spec: MetricSpec, allow_modules: tuple[str, ...]) -> MetricFn:
    if spec.kind == "judge":
        raise MetricError(f"LM-judge metric {spec.name!r}: judge metrics are not supported by workers yet")
    if spec.kind == "builtin":
        return metric_from_spec({"metric": spec.name, **spec.options} if spec.options else spec.name)
    return resolve_metric(spec.name, allow_modules=allow_modules)
