"""Pydantic messages to Kafka records and back.

A record's value is the model's JSON (``dspex.schemas.encode``); its headers name the schema and,
where the model has them, the job, candidate and example index (``dspex.schemas.headers_for``),
so that a record whose value cannot be read can still be accounted to its job. Its key follows
the topic's key field (``dspex.schemas.key_for``).

    >>> record = to_record(task, role="tasks")  # doctest: +SKIP
    >>> await producer.produce_record(registry.name("tasks"), record)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Message
from pydantic import BaseModel

from dspex.schemas import decode, encode, headers_for, key_for

__all__ = [
    "RawHeaders",
    "Record",
    "decode_message",
    "message_position",
    "model_decoder",
    "record_headers",
    "to_record",
]

M = TypeVar("M", bound=BaseModel)
RawHeaders = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Record:
    """What a producer sends: key, value and headers as bytes."""

    value: bytes
    key: bytes | None = None
    headers: RawHeaders = field(default_factory=list)


def to_record(model: BaseModel, *, role: str | None = None, key: bytes | str | None = None) -> Record:
    """Encode ``model``; the key is ``key`` if given, else the key field of topic ``role``."""
    if key is None and role is not None:
        key = key_for(role, model)
    raw_key = key.encode("utf-8") if isinstance(key, str) else key
    headers: RawHeaders = list(headers_for(model))
    return Record(value=encode(model), key=raw_key, headers=headers)


def record_headers(message: Message) -> RawHeaders:
    """A consumed message's headers as a list (confluent-kafka gives None when there are none)."""
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(name, value.encode("utf-8") if isinstance(value, str) else value) for name, value in pairs]


def message_position(message: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed message (always set on those)."""
    return str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)


def decode_message(message: Message, model_type: type[M] | Any) -> Any:
    """Validate a consumed message's value as ``model_type``; raises dspex.errors.SchemaError."""
    return decode(message.value(), model_type)


def model_decoder(model_type: type[M] | Any) -> Callable[[Message], Any]:
    """A decoder for :class:`~dspex.streams.consumer.ConsumerRuntime` reading ``model_type``."""

    def decode_value(message: Message) -> Any:
        return decode(message.value(), model_type)

    decode_value.__qualname__ = f"model_decoder({getattr(model_type, '__name__', model_type)})"
    return decode_value
