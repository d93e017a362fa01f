"""The predictor worker: tasks in, predictions out (``dspex worker predict``).

For each Task (consumer group ``<prefix>predict``, up to ``--concurrency`` in flight):

1. skip it when its job was cancelled or has failed (committed, nothing produced);
2. resolve the candidate program (:class:`~dspex.processors.candidates.CandidateCache`) and the job's
   LM (``Task.lm``, for predictors without their own), both checked against the security policy
   before any call; a refusal dead-letters the task (reason ``security_policy``);
3. run ``await program.acall(**inputs)`` with the job's LM in the context;
4. produce a PredictionRecord (outputs, trace, usage, latency, adapter) keyed by task id, and return
   only once the broker acknowledged it, so the task's offset is committed only after its result.

A program or LM that fails yields a PredictionRecord with an error instead (the scorer gives it the
job's failure score): ``systemic`` for a bad key, an unknown model or a program that cannot be built,
so that the aggregator fails the whole job at once with the provider's message.

    worker = Predictor(KafkaSettings(bootstrap_servers="127.0.0.1:9092"), WorkerOptions(prefix="dspex."))
    worker.install_signal_handlers()
    await worker.run()
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import AbstractContextManager, AsyncExitStack, nullcontext
from typing import Any

from confluent_kafka import Message
from pydantic_core import to_jsonable_python

from dspex import settings as dspex_settings
from dspex.errors import (
    AdapterParseError,
    ConfigurationError,
    LMError,
    PoisonMessageError,
    ProgramLoadError,
    SecurityPolicyError,
)
from dspex.lm import LM, Usage, track_usage
from dspex.observability.metrics import LM_CALLS
from dspex.primitives import Module, Prediction
from dspex.processors.candidates import CandidateCache
from dspex.processors.common import Outcome, Worker, error_info
from dspex.schemas.common import ErrorInfo, TraceEntry, UsageRecord
from dspex.schemas.dlq import DLQ_REASON_SECURITY_POLICY
from dspex.schemas.results import PredictionRecord
from dspex.schemas.tasks import Task

__all__ = ["Predictor"]

logger = logging.getLogger(__name__)

_RAW_TEXT_KEPT = 500
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class Predictor(Worker):
    """Runs candidate programs on tasks (see the module docs)."""

    kind = "predict"
    input_role = "tasks"
    input_model = Task

    candidates: CandidateCache | None = None

    async def open_caches(self, stack: AsyncExitStack) -> None:
        cache = CandidateCache(
            self.settings,
            self.registry.name("candidates"),
            policy=self.options.policy,
            lms=self.lms,
            wait_s=self.options.candidate_wait_s,
        )
        self.candidates = await stack.enter_async_context(cache)

    async def handle(self, message: Message, value: Any) -> Outcome:
        task: Task = value
        reason = self.jobs.stop_reason(task.job_id) if self.jobs is not None else None
        if reason is not None:
            logger.debug("skipping task %s of %s job %s", task.task_id, reason, task.job_id)
            return "skipped"
        record = await self.predict(task)
        await self.produce("predictions", record)
        return "ok"

    async def predict(self, task: Task) -> PredictionRecord:
        """Run ``task``; a failure of the program or its LM becomes a record with an error.

        Raises PoisonMessageError for tasks that must be dead-lettered (unknown candidate, a
        program or LM the policy refuses).
        """
        try:
            program, lm = await self._resolve(task)
        except (ProgramLoadError, ConfigurationError) as exc:  # every task of the job fails alike
            return self._record(task, error=error_info(exc), usage=Usage(), latency=0.0)
        with track_usage() as tracker:
            started = time.perf_counter()
            try:
                with self._lm_context(lm):
                    prediction = await program.acall(**task.inputs)
            except SecurityPolicyError as exc:  # e.g. a tool outside --allow-module, at run time
                raise PoisonMessageError(str(exc), reason=DLQ_REASON_SECURITY_POLICY) from exc
            except Exception as exc:  # the program's failure is the task's result, scored downstream
                latency = time.perf_counter() - started
                self._count_lm(tracker.usage, exc)
                return self._record(task, error=_failure(exc), usage=tracker.usage, latency=latency)
        latency = time.perf_counter() - started
        self._count_lm(tracker.usage, None)
        return self._success(task, prediction, tracker.usage, latency)

    async def _resolve(self, task: Task) -> tuple[Module, LM | None]:
        """The program and the job's LM (None: the program's predictors bring their own)."""
        if self.candidates is None:
            raise ConfigurationError("the predict worker is not running")
        program = await self.candidates.program(task.candidate_id)
        try:
            lm = self.lms.for_spec(task.lm) if task.lm is not None else None
        except SecurityPolicyError as exc:
            raise PoisonMessageError(
                f"job {task.job_id}: LM refused: {exc}", reason=DLQ_REASON_SECURITY_POLICY
            ) from exc
        return program, lm

    @staticmethod
    def _lm_context(lm: LM | None) -> AbstractContextManager[Any]:
        # Only set when the job named one: predictors with their own LM keep it either way.
        return dspex_settings.context(lm=lm) if lm is not None else nullcontext()

    def _success(self, task: Task, prediction: Any, usage: Usage, latency: float) -> PredictionRecord:
        if not isinstance(prediction, Prediction):
            problem = ConfigurationError(
                f"the program returned {type(prediction).__name__}; return a dspex.Prediction"
            )
            return self._record(task, error=error_info(problem), usage=usage, latency=latency)
        return self._record(
            task,
            outputs=to_jsonable_python(prediction.to_dict(), fallback=str),
            trace=[_trace_entry(step) for step in prediction.trace],
            adapter=prediction.adapter,
            usage=usage,
            latency=latency,
        )

    def _record(self, task: Task, *, usage: Usage, latency: float, **fields: Any) -> PredictionRecord:
        return PredictionRecord(
            task_id=task.task_id,
            job_id=task.job_id,
            candidate_id=task.candidate_id,
            example_index=task.example_index,
            example=task.example,
            usage=_usage_record(usage),
            latency_s=latency,
            attempt=task.attempt,
            worker_id=self.worker_id,
            **fields,
        )

    def _count_lm(self, usage: Usage, error: Exception | None) -> None:
        calls = LM_CALLS.labels
        if usage.lm_calls > usage.cache_hits:
            calls(kind=self.kind, outcome="ok").inc(usage.lm_calls - usage.cache_hits)
        if usage.cache_hits:
            calls(kind=self.kind, outcome="cache_hit").inc(usage.cache_hits)
        if isinstance(error, LMError | AdapterParseError):
            calls(kind=self.kind, outcome=_outcome_name(error)).inc()


def _failure(exc: Exception) -> ErrorInfo:
    if isinstance(exc, AdapterParseError):
        raw = exc.raw_text if len(exc.raw_text) <= _RAW_TEXT_KEPT else exc.raw_text[:_RAW_TEXT_KEPT] + "..."
        return error_info(exc, message=f"{exc}; the LM answered: {raw!r}")
    if not isinstance(exc, LMError | ConfigurationError):
        logger.debug("program failed on a task", exc_info=exc)
    return error_info(exc)


def _outcome_name(error: Exception) -> str:
    """``LMRateLimitError`` -> ``rate_limit``: a bounded label value per error class."""
    name = type(error).__name__.removeprefix("LM").removesuffix("Error")
    return _CAMEL.sub("_", name).lower() or "error"


def _trace_entry(step: Any) -> TraceEntry:
    return TraceEntry(
        predictor=step.predictor_path,
        inputs=to_jsonable_python(step.inputs, fallback=str),
        outputs=to_jsonable_python(step.outputs, fallback=str),
    )


def _usage_record(usage: Usage) -> UsageRecord:
    return UsageRecord(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd,
        lm_calls=usage.lm_calls,
        cache_hits=usage.cache_hits,
    )
