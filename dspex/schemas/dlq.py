"""Values of the dlq topic (key: the original key): messages no consumer could process."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field, field_validator

from dspex.schemas.base import Message, Timestamp, WireModel, utc_now
from dspex.schemas.headers import Headers, HeaderValue, ids_from_headers

__all__ = [
    "DLQ_REASON_HANDLER_ERROR",
    "DLQ_REASON_SCHEMA_INVALID",
    "DLQ_REASON_SECURITY_POLICY",
    "DLQ_REASON_UNDECODABLE",
    "DLQ_REASON_UNKNOWN_CANDIDATE",
    "DLQ_REASON_UNSUPPORTED_VERSION",
    "KNOWN_DLQ_REASONS",
    "DeadLetter",
    "DeadLetterHeader",
]

# DeadLetter.reason: short machine codes (an open set; these are the ones dspex writes).
DLQ_REASON_UNDECODABLE = "undecodable"  # not UTF-8 JSON at all
DLQ_REASON_SCHEMA_INVALID = "schema_invalid"  # JSON, but not the model (wrong types, missing fields)
DLQ_REASON_UNSUPPORTED_VERSION = "unsupported_version"  # a schema major version this reader does not know
DLQ_REASON_UNKNOWN_CANDIDATE = "unknown_candidate"  # a task naming a candidate never published
DLQ_REASON_SECURITY_POLICY = "security_policy"  # code, API base or key variable the worker does not allow
DLQ_REASON_HANDLER_ERROR = "handler_error"  # the handler raised on this message every time
KNOWN_DLQ_REASONS = frozenset(
    {
        DLQ_REASON_UNDECODABLE,
        DLQ_REASON_SCHEMA_INVALID,
        DLQ_REASON_UNSUPPORTED_VERSION,
        DLQ_REASON_UNKNOWN_CANDIDATE,
        DLQ_REASON_SECURITY_POLICY,
        DLQ_REASON_HANDLER_ERROR,
    }
)


class DeadLetterHeader(WireModel):
    """One original Kafka header: its name and its value, base64 (None where it had none)."""

    name: str
    value: str | None = None

    @field_validator("value")
    @classmethod
    def _is_base64(cls, text: str | None) -> str | None:
        if text is not None:
            _b64decode(text)
        return text


class DeadLetter(Message):
    """A message set aside, with everything needed to account for it and to replay it.

    ``key``, ``value`` and header values are the original bytes, base64-encoded (None where the
    original had none); ``key_bytes()``, ``value_bytes()`` and ``raw_headers()`` give them back.
    ``job_id``, ``candidate_id`` and ``example_index`` come from the original
    headers when they name them, so the job can still count the message.
    """

    original_topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    key: str | None = Field(default=None, description="Original key, base64.")
    value: str | None = Field(default=None, description="Original value, base64.")
    headers: list[DeadLetterHeader] = Field(default_factory=list, description="Original headers, in order.")
    error_type: str
    error: str = Field(description="What went wrong, for people.")
    reason: str = Field(description='Machine code, e.g. "undecodable", "schema_invalid".')
    worker_id: str
    consumer_group: str | None = None
    job_id: str | None = None
    candidate_id: str | None = None
    example_index: int | None = Field(default=None, ge=0)
    dead_lettered_at: Timestamp = Field(default_factory=utc_now)

    @field_validator("key", "value")
    @classmethod
    def _is_base64(cls, text: str | None) -> str | None:
        if text is not None:
            _b64decode(text)
        return text

    @classmethod
    def build(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        error: BaseException | str,
        reason: str,
        worker_id: str,
        **fields: Any,
    ) -> DeadLetter:
        """A dead letter for a raw Kafka message, ids taken from its headers."""
        ids = ids_from_headers(_pairs(headers))
        return cls(
            original_topic=topic,
            partition=partition,
            offset=offset,
            key=_b64encode(key),
            value=_b64encode(value),
            headers=[_header(name, item) for name, item in _pairs(headers)],
            error_type=type(error).__name__ if isinstance(error, BaseException) else "str",
            error=str(error),
            reason=reason,
            worker_id=worker_id,
            job_id=ids.job_id,
            candidate_id=ids.candidate_id,
            example_index=ids.example_index,
            **fields,
        )

    def key_bytes(self) -> bytes | None:
        """The original key."""
        return None if self.key is None else _b64decode(self.key)

    def value_bytes(self) -> bytes | None:
        """The original value."""
        return None if self.value is None else _b64decode(self.value)

    def raw_headers(self) -> list[tuple[str, bytes | None]]:
        """The original headers, as a Kafka producer takes them (for replay)."""
        return [(item.name, None if item.value is None else _b64decode(item.value)) for item in self.headers]


def _pairs(headers: Headers) -> list[tuple[str, HeaderValue]]:
    if headers is None:
        return []
    items: Iterable[tuple[str, HeaderValue]] = headers.items() if isinstance(headers, Mapping) else headers
    return list(items)


def _header(name: str, value: HeaderValue) -> DeadLetterHeader:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return DeadLetterHeader(name=name, value=_b64encode(raw))


def _b64encode(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64: {exc}") from exc
