"""The key of a request dict in :class:`dspex.lm.cache.Cache`: SHA-256 of its canonical JSON.

Values JSON has no form for are given one, at any depth: a pydantic model its JSON dump, a pydantic
class its JSON schema, a dataclass its fields, a date or time its ISO text, an enum its value, a
UUID its text, a callable its source (when Python can read it), else its qualified name, with the
object's identity added for an instance whose source is unknown (so two different embedding objects
never share entries; such keys hold for this process only). Anything else raises TypeError, which
the cache reads as "not cacheable".
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import inspect
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic

__all__ = ["request_key"]


def _callable_text(value: Any) -> str:
    try:
        return f"<callable_source:{inspect.getsource(value)}>"
    except (OSError, TypeError):
        pass
    name = getattr(value, "__qualname__", None)
    if isinstance(name, str):
        return f"<callable:{getattr(value, '__module__', '')}.{name}>"
    kind = type(value)
    return f"<callable:{kind.__module__}.{kind.__qualname__}@{id(value):x}>"


def _json_form(value: Any) -> Any:
    """What ``json.dumps`` writes for a value it has no form for (its ``default=`` hook)."""
    if isinstance(value, type) and issubclass(value, pydantic.BaseModel):
        return value.model_json_schema()
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if callable(value):
        return _callable_text(value)
    raise TypeError(f"a {type(value).__name__} has no JSON form for a cache key")


def request_key(request: Mapping[str, Any], ignored: Iterable[str] = ()) -> str:
    """64 hex digits for ``request`` without the keys in ``ignored``; TypeError when a value has no
    JSON form."""
    skip = set(ignored)
    plain = {key: value for key, value in request.items() if key not in skip}
    try:
        text = json.dumps(
            plain,
            default=_json_form,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except ValueError as exc:  # NaN and the like: no canonical form, so no key
        raise TypeError(f"request has no canonical JSON form: {exc}") from exc
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
