"""Fine-tuning data and settings: DSPy's ``TrainDataFormat`` and ``TrainingStatus``, and the checks
made before any data leaves the machine.

    check_train_data(records, TrainDataFormat.CHAT)     # ConfigurationError naming each bad record
    jsonl_bytes(records)                                 # the file to upload, one record a line

A chat record is ``{"messages": [{"role": ..., "content": ...}, ...]}`` (roles system, user,
assistant; string content; at least one assistant message, which is what the model learns); a
completion record is ``{"prompt": str, "completion": str}``. The same rules as DSPy's and OpenAI's
data preparation guide, written here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Literal, TypedDict

from dspex.errors import ConfigurationError

__all__ = [
    "GRPOChatData",
    "GRPOGroup",
    "GRPOStatus",
    "TrainDataFormat",
    "TrainingStatus",
    "chat_record_error",
    "check_train_data",
    "data_format_of",
    "jsonl_bytes",
]

_ROLES = ("assistant", "system", "user")
_SHOWN_ERRORS = 5


class TrainingStatus(StrEnum):
    """Where a fine-tuning job is (DSPy's values); a provider's own statuses map onto these."""

    not_started = "not_started"
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self in (TrainingStatus.succeeded, TrainingStatus.failed, TrainingStatus.cancelled)


class TrainDataFormat(StrEnum):
    """The shape of the training records (DSPy's values)."""

    CHAT = "chat"
    COMPLETION = "completion"
    GRPO_CHAT = "grpo_chat"


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class GRPOChatData(TypedDict):
    """One rollout of a GRPO group: the prompt's messages, the model's answer and its reward."""

    messages: list[ChatMessage]
    completion: ChatMessage
    reward: float


class GRPOGroup(TypedDict):
    """What one GRPO step sends per batch the trainer asked for: the rollouts of one input."""

    batch_id: int | None
    group: list[GRPOChatData]


class GRPOStatus(TypedDict, total=False):
    """A reinforcement job's view of itself (``ReinforceJob.get_status()``): ``pending_batch_ids``
    are the batches the trainer waits for; GRPO fills each once."""

    job_id: str
    status: str | None
    current_model: str
    checkpoints: dict[str, str]
    last_checkpoint: str | None
    pending_batch_ids: list[int]


def data_format_of(value: TrainDataFormat | str | None) -> TrainDataFormat:
    """``value`` as a :class:`TrainDataFormat` (None: chat); an unknown name is a ConfigurationError."""
    if value is None:
        return TrainDataFormat.CHAT
    try:
        return TrainDataFormat(value)
    except ValueError:
        known = [item.value for item in TrainDataFormat]
        raise ConfigurationError(f"unknown train_data_format {value!r}; known: {known}") from None


def _message_error(message: Any) -> str | None:
    if not isinstance(message, Mapping):
        return f"a message must be an object, found {type(message).__name__}"
    if set(message) - {"role", "content", "name", "weight"} or not {"role", "content"} <= set(message):
        return f"a message has keys role and content, found {sorted(message)}"
    if message["role"] not in _ROLES:
        return f"role must be one of {list(_ROLES)}, found {message['role']!r}"
    if not isinstance(message["content"], str):
        return f"content must be a string, found {type(message['content']).__name__}"
    return None


def chat_record_error(record: Any) -> str | None:
    """Why ``record`` is not a chat training record, or None when it is one."""
    if not isinstance(record, Mapping):
        return f"a record must be an object, found {type(record).__name__}"
    messages = record.get("messages")
    if set(record) - {"messages", "tools", "parallel_tool_calls"} or not isinstance(messages, list):
        return f"a chat record is {{'messages': [...]}}, found keys {sorted(record)}"
    for index, message in enumerate(messages):
        error = _message_error(message)
        if error is not None:
            return f"message {index}: {error}"
    if not any(message["role"] == "assistant" for message in messages):
        return "no assistant message (the model learns from the assistant messages)"
    return None


def _completion_record_error(record: Any) -> str | None:
    if not isinstance(record, Mapping) or set(record) != {"prompt", "completion"}:
        found = sorted(record) if isinstance(record, Mapping) else type(record).__name__
        return f"a completion record is {{'prompt': str, 'completion': str}}, found {found}"
    if not all(isinstance(record[key], str) for key in ("prompt", "completion")):
        return "prompt and completion must be strings"
    return None


def check_train_data(
    train_data: Sequence[Any], train_data_format: TrainDataFormat | str | None
) -> TrainDataFormat:
    """The checked format; a ConfigurationError naming the first bad records when any is malformed,
    or when there are none at all."""
    data_format = data_format_of(train_data_format)
    if data_format is TrainDataFormat.GRPO_CHAT:
        raise ConfigurationError("train_data_format 'grpo_chat' is for reinforcement jobs, not fine-tuning")
    if not isinstance(train_data, list | tuple):
        raise ConfigurationError(f"train_data must be a list of records, got {type(train_data).__name__}")
    if not train_data:
        raise ConfigurationError("train_data is empty: there is nothing to fine-tune on")
    check = chat_record_error if data_format is TrainDataFormat.CHAT else _completion_record_error
    errors = [(index, error) for index, record in enumerate(train_data) if (error := check(record))]
    if errors:
        shown = "; ".join(f"record {index}: {error}" for index, error in errors[:_SHOWN_ERRORS])
        more = f" (and {len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
        raise ConfigurationError(
            f"{len(errors)} of {len(train_data)} {data_format.value} training records are malformed: "
            f"{shown}{more}"
        )
    return data_format


def jsonl_bytes(train_data: Sequence[Mapping[str, Any]]) -> bytes:
    """The records as a JSONL file (UTF-8, one compact JSON object a line)."""
    lines = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) for record in train_data)
    return ("\n".join(lines) + "\n").encode("utf-8")
