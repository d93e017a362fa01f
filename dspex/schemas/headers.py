"""Kafka header names and how ids travel in them.

Every message carries the job, candidate and example index it belongs to in headers where they
apply, so a message whose value cannot be decoded can still be accounted to its job. Header
values are UTF-8 bytes; the example index is its decimal text.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel

__all__ = [
    "HEADER_CANDIDATE_ID",
    "HEADER_EXAMPLE_INDEX",
    "HEADER_JOB_ID",
    "HEADER_MAX_IN_FLIGHT",
    "HEADER_PRIORITY",
    "HEADER_SCHEMA",
    "HEADER_TRACEPARENT",
    "TRACEPARENT",
    "HeaderIds",
    "HeaderValue",
    "Headers",
    "headers_for",
    "ids_from_headers",
    "max_in_flight_from_headers",
    "parse_schema_header",
    "priority_from_headers",
    "schema_header_value",
    "traceparent_from_headers",
]

HEADER_JOB_ID = "dspex-job-id"
HEADER_CANDIDATE_ID = "dspex-candidate-id"
HEADER_EXAMPLE_INDEX = "dspex-example-index"
HEADER_PRIORITY = "dspex-priority"
"""The job's priority on tasks that have one (absent: normal), readable before the value is decoded."""
HEADER_MAX_IN_FLIGHT = "dspex-max-in-flight"
"""The job's in-flight budget per predictor on tasks of jobs that set one (``num_threads``)."""
HEADER_SCHEMA = "dspex-schema"
"""Model name and schema version of the value, e.g. ``b"Task/1.0"``."""

HeaderValue = bytes | str | None
Headers = Iterable[tuple[str, HeaderValue]] | Mapping[str, HeaderValue] | None


class HeaderIds(NamedTuple):
    """The ids a message's headers name (None where absent or unreadable)."""

    job_id: str | None
    candidate_id: str | None
    example_index: int | None


def schema_header_value(model: BaseModel) -> bytes:
    """``b"<ModelName>/<schema_version>"`` for the dspex-schema header."""
    version = getattr(model, "schema_version", "")
    return f"{type(model).__name__}/{version}".encode()


def parse_schema_header(value: HeaderValue) -> tuple[str, str] | None:
    """``b"Task/1.0"`` -> ``("Task", "1.0")``; None when absent or malformed."""
    text = _text(value)
    if text is None or "/" not in text:
        return None
    name, _, version = text.partition("/")
    return name, version


HEADER_TRACEPARENT = "traceparent"
"""W3C trace context of the example a task or prediction belongs to (when tracing is on)."""
TRACEPARENT: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("dspex_traceparent", default=None)
"""The ``traceparent`` the messages produced here carry (set by :mod:`dspex.observability.tracing`)."""


def headers_for(model: BaseModel) -> list[tuple[str, bytes]]:
    """The headers a message gets: its schema, and job, candidate and example index where it has them
    (and the trace context of the example being handled, when tracing is on)."""
    headers = [(HEADER_SCHEMA, schema_header_value(model))]
    traceparent = TRACEPARENT.get()
    if traceparent is not None:
        headers.append((HEADER_TRACEPARENT, traceparent))
    for name, field in _id_fields(type(model)):
        value = getattr(model, field)
        if value is not None:
            headers.append((name, str(value).encode()))
    return headers


_ID_HEADERS = (
    (HEADER_JOB_ID, "job_id"),
    (HEADER_CANDIDATE_ID, "candidate_id"),
    (HEADER_EXAMPLE_INDEX, "example_index"),
    (HEADER_PRIORITY, "priority"),
    (HEADER_MAX_IN_FLIGHT, "max_in_flight"),
)
_id_fields_of: dict[type[BaseModel], tuple[tuple[str, str], ...]] = {}


def _id_fields(model_type: type[BaseModel]) -> tuple[tuple[str, str], ...]:
    """The (header, field) pairs of :data:`_ID_HEADERS` that ``model_type`` has, found once per type
    (every message produced asks)."""
    found = _id_fields_of.get(model_type)
    if found is None:
        fields = model_type.model_fields  # asking a model for a field it lacks costs an exception
        found = tuple((name, field) for name, field in _ID_HEADERS if field in fields)
        _id_fields_of[model_type] = found
    return found


def ids_from_headers(headers: Headers) -> HeaderIds:
    """The job id, candidate id and example index named in ``headers``, as far as they are readable.

    Accepts what Kafka clients give: a list of ``(name, bytes | None)`` pairs, a mapping, or None.
    Never raises: it exists for messages that are already broken.
    """
    found = _as_dict(headers)
    return HeaderIds(
        job_id=_text(found.get(HEADER_JOB_ID)),
        candidate_id=_text(found.get(HEADER_CANDIDATE_ID)),
        example_index=_index(found.get(HEADER_EXAMPLE_INDEX)),
    )


def priority_from_headers(headers: Headers) -> str | None:
    """The priority named in ``headers`` (None when absent or unreadable; the reader decides what an
    unknown name means). Never raises."""
    return _text(_as_dict(headers).get(HEADER_PRIORITY))


def max_in_flight_from_headers(headers: Headers) -> int | None:
    """The job's in-flight budget named in ``headers`` (None when absent or unreadable). Never raises."""
    value = _index(_as_dict(headers).get(HEADER_MAX_IN_FLIGHT))
    return value if value is not None and value >= 1 else None


def traceparent_from_headers(headers: Headers) -> str | None:
    """The W3C ``traceparent`` in ``headers`` (None when absent or unreadable). Never raises."""
    return _text(_as_dict(headers).get(HEADER_TRACEPARENT))


def _as_dict(headers: Headers) -> dict[str, Any]:
    if headers is None:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, Any] = {}
    for name, value in pairs:
        found.setdefault(name, value)  # the first of repeated headers wins
    return found


def _text(value: HeaderValue) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8") or None
        except UnicodeDecodeError:
            return None
    return None


def _index(value: HeaderValue) -> int | None:
    text = _text(value)
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text)
