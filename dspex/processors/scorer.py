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

Predictions of jobs with a built-in metric do not come here by default: the predictor scores them
itself and writes their score (``source="predictor"``) straight to the scores topic
(:mod:`dspex.processors.inline_score`, ``dspex worker predict --no-inline-builtin-metrics`` to send
them here). Steps 2 to 4 are that module's :func:`~dspex.processors.inline_score.score_prediction`.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Message

from dspex.errors import ConfigurationError, PoisonMessageError
from dspex.processors.common import DLQ_REASON_UNKNOWN_JOB, Outcome, Worker, WorkerOptions
from dspex.processors.inline_score import MetricBook, MetricFn, produce_score, score_prediction
from dspex.schemas.common import MetricSpec
from dspex.schemas.jobs import EvalJob
from dspex.schemas.results import SCORE_SOURCE_SCORER, PredictionRecord, ScoreRecord
from dspex.streams.config import KafkaSettings

__all__ = ["Scorer"]

logger = logging.getLogger(__name__)


class Scorer(Worker):
    """Scores predictions with their job's metric (see the module docs)."""

    kind = "score"
    input_role = "predictions"
    input_model = PredictionRecord

    def __init__(self, settings: KafkaSettings, options: WorkerOptions | None = None) -> None:
        super().__init__(settings, options)
        self._metrics = MetricBook(self.options.policy.modules)

    async def handle(self, message: Message, value: Any) -> Outcome:
        record: PredictionRecord = value
        job = await self._job(record)
        await produce_score(self, message, record, job, self._metrics.of_job, source=SCORE_SOURCE_SCORER)
        return "ok"

    async def score(self, record: PredictionRecord, job: EvalJob) -> ScoreRecord:
        """The ScoreRecord of ``record`` under ``job``'s metric (PoisonMessageError: dead-letter it)."""
        return await score_prediction(
            record, job, self._metrics.of_job, source=SCORE_SOURCE_SCORER, worker_id=self.worker_id
        )

    def metric(self, spec: MetricSpec) -> MetricFn:
        """The metric of ``spec``, built once (PoisonMessageError when it cannot or may not be)."""
        return self._metrics.metric(spec)

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
