"""Which model is the value of which topic, and which field is its key.

Topic roles are the design's names without the prefix ("jobs", "tasks", ...); the streams
package maps them to real topic names.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dspex.errors import ConfigurationError
from dspex.schemas.checkpoints import OptimizerCheckpoint
from dspex.schemas.dlq import DeadLetter
from dspex.schemas.jobs import Cancel, EvalJob, JobMessage, OptimizeJob, PurgeJob
from dspex.schemas.programs import ProgramSpec
from dspex.schemas.provider_batch import LMBatchAnswer, ParkedLMRequest, ProviderBatchCheckpoint
from dspex.schemas.results import PredictionRecord, ScoreRecord
from dspex.schemas.status import JobStatus, OptimizeStatus, StatusMessage
from dspex.schemas.submit import SubmitJob
from dspex.schemas.tasks import Task
from dspex.schemas.workers import WorkerHeartbeat

__all__ = [
    "MESSAGE_MODELS",
    "TOPIC_KEY_FIELDS",
    "TOPIC_ROLES",
    "TOPIC_VALUE_MODELS",
    "UNION_TYPES",
    "key_for",
]

TOPIC_VALUE_MODELS: dict[str, Any] = {
    "jobs": JobMessage,
    "candidates": ProgramSpec,
    "tasks": Task,
    "predictions": PredictionRecord,
    "scores": ScoreRecord,
    "status": StatusMessage,
    "workers": WorkerHeartbeat,
    "dlq": DeadLetter,
    "optimizer-state": OptimizerCheckpoint,
    "submit": SubmitJob,
    "lm-requests": ParkedLMRequest,
    "lm-responses": LMBatchAnswer,
    "lm-batches": ProviderBatchCheckpoint,
}
"""Topic role -> the model (or discriminated union) its values decode into."""

TOPIC_ROLES: tuple[str, ...] = tuple(TOPIC_VALUE_MODELS)

TOPIC_KEY_FIELDS: dict[str, str | None] = {
    "jobs": "job_id",
    "candidates": "candidate_id",
    "tasks": "task_id",
    "predictions": "task_id",
    "scores": "job_id",
    "status": "job_id",
    "workers": "worker_id",
    "dlq": None,  # the original message's key, kept as is (DeadLetter.key_bytes())
    "optimizer-state": "job_id",
    "submit": "job_id",
    "lm-requests": "request_hash",
    "lm-responses": "request_hash",
    "lm-batches": "key",
}
"""Topic role -> the value field whose UTF-8 text is the message key."""

MESSAGE_MODELS: tuple[type[BaseModel], ...] = (
    EvalJob,
    OptimizeJob,
    Cancel,
    PurgeJob,
    ProgramSpec,
    Task,
    PredictionRecord,
    ScoreRecord,
    JobStatus,
    OptimizeStatus,
    WorkerHeartbeat,
    DeadLetter,
    OptimizerCheckpoint,
    SubmitJob,
    ParkedLMRequest,
    LMBatchAnswer,
    ProviderBatchCheckpoint,
)
"""Every top-level message model."""

UNION_TYPES: dict[str, Any] = {"JobMessage": JobMessage, "StatusMessage": StatusMessage}
"""The discriminated unions by name."""


def key_for(role: str, model: BaseModel) -> bytes | None:
    """The Kafka key of ``model`` on the topic ``role``, per TOPIC_KEY_FIELDS."""
    if role not in TOPIC_KEY_FIELDS:
        raise ConfigurationError(f"unknown topic role {role!r}; known: {', '.join(TOPIC_ROLES)}")
    if role == "dlq" and isinstance(model, DeadLetter):
        return model.key_bytes()
    field = TOPIC_KEY_FIELDS[role]
    value = getattr(model, field, None) if field else None
    return None if value is None else str(value).encode("utf-8")
