"""Pydantic models of every message on every dspex topic, and how they travel.

Reading rules (see :mod:`dspex.schemas.base`): wrong types and unknown major schema versions are
rejected, unknown fields are ignored, newer minor versions are accepted; models are frozen.

    >>> from dspex.schemas import Task, decode, encode
    >>> task = Task.build(job_id="j1", candidate_id="c1", example_index=0,
    ...                   example={"question": "1+1?", "answer": "2"}, input_keys=["question"])
    >>> decode(encode(task), Task) == task
    True
"""

from __future__ import annotations

from dspex.schemas.base import Message, Timestamp, WireModel, parse_version, utc_now
from dspex.schemas.checkpoints import OptimizerCheckpoint
from dspex.schemas.common import (
    PRIORITIES,
    CallbackEvent,
    ErrorInfo,
    ExampleSet,
    LMSpec,
    MetricKind,
    MetricSpec,
    Priority,
    ToolCallRecord,
    TraceEntry,
    UsageRecord,
)
from dspex.schemas.dlq import (
    DLQ_REASON_HANDLER_ERROR,
    DLQ_REASON_SCHEMA_INVALID,
    DLQ_REASON_SECURITY_POLICY,
    DLQ_REASON_UNDECODABLE,
    DLQ_REASON_UNKNOWN_CANDIDATE,
    DLQ_REASON_UNSUPPORTED_VERSION,
    KNOWN_DLQ_REASONS,
    DeadLetter,
    DeadLetterHeader,
)
from dspex.schemas.export import export_json_schemas, json_schemas
from dspex.schemas.headers import (
    HEADER_CANDIDATE_ID,
    HEADER_EXAMPLE_INDEX,
    HEADER_JOB_ID,
    HEADER_PRIORITY,
    HEADER_SCHEMA,
    HeaderIds,
    headers_for,
    ids_from_headers,
    parse_schema_header,
    priority_from_headers,
)
from dspex.schemas.jobs import Cancel, DatasetSummary, EvalJob, JobMessage, OptimizeJob, PurgeJob
from dspex.schemas.lm_calls import LMCallRecord, LMMessageRecord
from dspex.schemas.programs import ProgramSpec, program_candidate_id
from dspex.schemas.registry import (
    MESSAGE_MODELS,
    TOPIC_KEY_FIELDS,
    TOPIC_ROLES,
    TOPIC_VALUE_MODELS,
    UNION_TYPES,
    key_for,
)
from dspex.schemas.results import (
    SCORE_SOURCE_DLQ,
    SCORE_SOURCE_PREDICTOR,
    SCORE_SOURCE_SCORER,
    PredictionRecord,
    ScoreRecord,
    UsageReport,
    is_usage_report,
)
from dspex.schemas.serde import decode, encode, model_name, schema_error_reason
from dspex.schemas.status import (
    LIMIT_STOP_REASONS,
    TERMINAL_STATES,
    CandidateAggregate,
    JobState,
    JobStatus,
    OptimizeStatus,
    OptimizeStopReason,
    StatusMessage,
    StopReason,
    TrialRecord,
    over_cost_budget,
)
from dspex.schemas.submit import SubmitJob
from dspex.schemas.tasks import Task, task_id_for
from dspex.schemas.workers import BreakerState, EndpointHealth, WorkerHeartbeat, WorkerKind

__all__ = [
    "DLQ_REASON_HANDLER_ERROR",
    "DLQ_REASON_SCHEMA_INVALID",
    "DLQ_REASON_SECURITY_POLICY",
    "DLQ_REASON_UNDECODABLE",
    "DLQ_REASON_UNKNOWN_CANDIDATE",
    "DLQ_REASON_UNSUPPORTED_VERSION",
    "HEADER_CANDIDATE_ID",
    "HEADER_EXAMPLE_INDEX",
    "HEADER_JOB_ID",
    "HEADER_PRIORITY",
    "HEADER_SCHEMA",
    "KNOWN_DLQ_REASONS",
    "LIMIT_STOP_REASONS",
    "MESSAGE_MODELS",
    "PRIORITIES",
    "SCORE_SOURCE_DLQ",
    "SCORE_SOURCE_PREDICTOR",
    "SCORE_SOURCE_SCORER",
    "TERMINAL_STATES",
    "TOPIC_KEY_FIELDS",
    "TOPIC_ROLES",
    "TOPIC_VALUE_MODELS",
    "UNION_TYPES",
    "BreakerState",
    "CallbackEvent",
    "Cancel",
    "CandidateAggregate",
    "DatasetSummary",
    "DeadLetter",
    "DeadLetterHeader",
    "EndpointHealth",
    "ErrorInfo",
    "EvalJob",
    "ExampleSet",
    "HeaderIds",
    "JobMessage",
    "JobState",
    "JobStatus",
    "LMCallRecord",
    "LMMessageRecord",
    "LMSpec",
    "Message",
    "MetricKind",
    "MetricSpec",
    "OptimizeJob",
    "OptimizeStatus",
    "OptimizeStopReason",
    "OptimizerCheckpoint",
    "PredictionRecord",
    "Priority",
    "ProgramSpec",
    "PurgeJob",
    "ScoreRecord",
    "StatusMessage",
    "StopReason",
    "SubmitJob",
    "Task",
    "Timestamp",
    "ToolCallRecord",
    "TraceEntry",
    "TrialRecord",
    "UsageRecord",
    "UsageReport",
    "WireModel",
    "WorkerHeartbeat",
    "WorkerKind",
    "decode",
    "encode",
    "export_json_schemas",
    "headers_for",
    "ids_from_headers",
    "is_usage_report",
    "json_schemas",
    "key_for",
    "model_name",
    "over_cost_budget",
    "parse_schema_header",
    "parse_version",
    "priority_from_headers",
    "program_candidate_id",
    "schema_error_reason",
    "task_id_for",
    "utc_now",
]
