"""Values of the predictions topic (key: task_id) and the scores topic (key: job_id)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from dspex.schemas.base import Message, Timestamp, utc_now
from dspex.schemas.common import CallbackEvent, ErrorInfo, ToolCallRecord, TraceEntry, UsageRecord
from dspex.schemas.lm_calls import LMCallRecord

__all__ = [
    "SCORE_SOURCE_DLQ",
    "SCORE_SOURCE_PREDICTOR",
    "SCORE_SOURCE_SCORER",
    "PredictionRecord",
    "ScoreRecord",
    "UsageReport",
    "is_usage_report",
]

# ScoreRecord.source values. A plain string on the wire (not a Literal) so that a source added
# by a newer writer does not make older readers dead-letter scores during a rolling upgrade.
SCORE_SOURCE_SCORER = "scorer"
SCORE_SOURCE_DLQ = "dlq"
SCORE_SOURCE_PREDICTOR = "predictor"


class PredictionRecord(Message):
    """What running a task gave: outputs, or an error, with trace, usage and latency.

    Named so as not to clash with ``dspex.Prediction``, the programming model's result object.
    The example travels along because the scorer needs its labels. ``callback_events``: what the
    worker's user callbacks (``dspex worker predict --callback``) heard during the run; absent when
    the worker has none. ``tool_calls``: the agent's tool calls with their start and duration
    (:class:`~dspex.schemas.common.ToolCallRecord`); absent when the program called no tool.
    ``attempt_id``: a random id of this run of the task (each delivery of a task runs it again,
    with its own LM calls); absent from writers that predate it. ``lm_call_log``: every LM call of
    the run with its messages and answer, bounded (:class:`~dspex.schemas.lm_calls.LMCallRecord`;
    ``lm_calls_unlogged`` counts calls beyond the bound); absent when the worker records none
    (``--no-record-lm-calls``), from writers that predate it, and for runs that made no call.
    """

    # 1.1: callback_events; 1.2: attempt_id; 1.3: tool_calls; 1.4: lm_call_log, lm_calls_unlogged
    SCHEMA_VERSION: ClassVar[str] = "1.4"

    task_id: str
    job_id: str
    candidate_id: str
    example_index: int = Field(ge=0)
    example: dict[str, Any]
    outputs: dict[str, Any] | None = None
    trace: list[TraceEntry] = Field(default_factory=list)
    callback_events: list[CallbackEvent] | None = None
    tool_calls: list[ToolCallRecord] | None = None
    lm_call_log: list[LMCallRecord] | None = None
    lm_calls_unlogged: int | None = Field(default=None, ge=0)
    usage: UsageRecord = Field(default_factory=UsageRecord)
    adapter: str | None = Field(default=None, description="Which adapter answered.")
    latency_s: float = Field(default=0.0, ge=0)
    error: ErrorInfo | None = None
    attempt: int = Field(default=0, ge=0)
    attempt_id: str | None = Field(default=None, description="Random id of this run of the task.")
    worker_id: str
    produced_at: Timestamp = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _outputs_or_error(self) -> PredictionRecord:
        if self.outputs is None and self.error is None:
            raise ValueError("a PredictionRecord needs outputs or an error")
        return self


class ScoreRecord(Message):
    """One example's result for one candidate: the score the metric gave, with what led to it.

    A failed prediction or metric scores the job's ``failure_score`` and keeps the ``error``;
    ``source`` says who wrote it: "scorer"; "predictor" when the predictor scored a built-in metric
    itself (the prediction then never went to the predictions topic; from 1.5); or "dlq" when a
    dead-lettered task was accounted to its job; a reader must not refuse a source it does not
    know. Readers keep the first score per (job, candidate, example index). ``callback_events``,
    ``tool_calls``, ``lm_call_log`` and ``lm_calls_unlogged`` are the prediction's (see
    :class:`PredictionRecord`); ``worker_id`` is the writer's, ``predicted_by`` the predictor's
    that ran the example (absent from writers before 1.4 and for dead letters).

    ``attempt_id`` is the prediction's: readers count the first score per example, but the usage of
    every distinct (task id, attempt id), so LM calls of a task run again after a redelivery are
    charged while a record sent twice is not. Absent (older writers, dead letters): only the first
    score's usage counts.
    """

    # 1.1: callback_events; 1.2: attempt_id; 1.3: tool_calls; 1.4: lm_call_log, lm_calls_unlogged,
    # predicted_by; 1.5: source "predictor" (a built-in metric scored by the predictor)
    SCHEMA_VERSION: ClassVar[str] = "1.5"

    job_id: str
    candidate_id: str
    example_index: int = Field(ge=0)
    task_id: str
    outputs: dict[str, Any] | None = None
    score: float
    feedback: str | None = None
    trace: list[TraceEntry] = Field(default_factory=list)
    callback_events: list[CallbackEvent] | None = None
    tool_calls: list[ToolCallRecord] | None = None
    lm_call_log: list[LMCallRecord] | None = None
    lm_calls_unlogged: int | None = Field(default=None, ge=0)
    usage: UsageRecord = Field(default_factory=UsageRecord, description="Prediction plus metric usage.")
    latency_s: float | None = Field(default=None, ge=0)
    error: ErrorInfo | None = None
    example: dict[str, Any] | None = Field(default=None, description="The example, when the writer keeps it.")
    source: str = SCORE_SOURCE_SCORER
    attempt_id: str | None = Field(default=None, description="The prediction's attempt id.")
    worker_id: str | None = None
    predicted_by: str | None = Field(default=None, description="Worker id of the predictor that ran it.")
    scored_at: Timestamp = Field(default_factory=utc_now)

    @property
    def failed(self) -> bool:
        """Whether the prediction or the metric failed."""
        return self.error is not None


class UsageReport(Message):
    """LM usage of a run of a task that ended with no result: its handler was cancelled (its
    partition revoked or lost, the worker stopping) after some of its LM calls were answered.

    A predictor writes it to the scores topic (key: job id) so that the aggregator charges those
    calls to the job, once per ``attempt_id`` like a :class:`ScoreRecord`'s repeats; it is never a
    result and counts no example. Its headers name the job only, never the candidate or the
    example: an aggregator from before this message dead-letters it without writing an error score
    for the example (its job's usage is then short by these calls, as it was before). ``kind``
    comes first on the wire, so readers of the scores topic tell it apart by its first bytes
    (:func:`is_usage_report`) without parsing.
    """

    SCHEMA_VERSION: ClassVar[str] = "1.0"

    kind: Literal["usage"] = "usage"
    job_id: str
    candidate_id: str
    example_index: int = Field(ge=0)
    task_id: str
    attempt_id: str = Field(description="The random id of the run whose calls these are.")
    usage: UsageRecord
    reason: str = Field(default="cancelled", description="Why the run ended without a result.")
    worker_id: str
    reported_at: Timestamp = Field(default_factory=utc_now)


_USAGE_REPORT_START = b'{"schema_version":"'
_USAGE_REPORT_KIND = b'"kind":"usage"'


def is_usage_report(value: bytes | None) -> bool:
    """Whether a scores-topic value is a :class:`UsageReport` (written by :func:`~dspex.schemas.encode`:
    its schema version, then its kind)."""
    if not value or not value.startswith(_USAGE_REPORT_START):
        return False
    head = value[len(_USAGE_REPORT_START) : len(_USAGE_REPORT_START) + 32]
    return _USAGE_REPORT_KIND in head
