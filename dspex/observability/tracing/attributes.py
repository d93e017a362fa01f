"""Span attribute values: OpenInference names, JSON text for structured values, no secrets.

Attribute names come from ``openinference-semantic-conventions`` (what Phoenix, Langfuse and
MLflow read). Values are bounded (:data:`MAX_VALUE_CHARS`) and scrubbed: a key whose name says
secret (``api_key``, ``authorization``, ``token``...) never gets its value into an attribute, and
the LM's API key is replaced wherever it would appear in text.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Final

from openinference.semconv.trace import MessageAttributes, SpanAttributes

__all__ = [
    "MAX_VALUE_CHARS",
    "REDACTED",
    "json_text",
    "message_attributes",
    "redacted_mapping",
    "scrub",
    "scrubbed",
    "secret_key",
]

MAX_VALUE_CHARS: Final = 16_000
REDACTED: Final = "[redacted]"
_SECRET_KEY: Final = re.compile(
    r"api[_-]?key|authorization|secret|password|token(?!s?_count)|bearer|credential|cookie", re.I
)
# LM request parameters whose values may go into llm.invocation_parameters (an allow-list: headers,
# keys and base URLs with credentials never do).
INVOCATION_PARAMETERS: Final = frozenset(
    {"temperature", "max_tokens", "max_completion_tokens", "top_p", "n", "stop", "seed", "rollout_id"}
)


def secret_key(name: str) -> bool:
    """Whether a key named ``name`` holds a secret (its value is never put in an attribute)."""
    return bool(_SECRET_KEY.search(name))


def redacted_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with the value of every secret-named key replaced, nested mappings included."""
    return {key: _redacted(key, value) for key, value in values.items()}


def _redacted(key: Any, value: Any) -> Any:
    if isinstance(key, str) and secret_key(key):
        return REDACTED
    if isinstance(value, Mapping):
        return redacted_mapping(value)
    return value


def json_text(value: Any) -> str:
    """``value`` as JSON text (what ``input.value`` / ``output.value`` hold), at most
    :data:`MAX_VALUE_CHARS` characters."""
    if isinstance(value, Mapping):
        value = redacted_mapping(value)
    try:
        text = json.dumps(value, default=_fallback, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return _bounded(text)


# The text of classes met in values (a signature handed to an adapter's format and parse: its repr
# walks every field's pydantic metadata, a tenth of what a sampled example's spans cost), made once
# per class; weakly held, as programs may make signature classes on the fly.
_CLASS_TEXTS: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def _fallback(value: Any) -> Any:
    if isinstance(value, type):
        text = _CLASS_TEXTS.get(value)
        if text is None:
            text = _CLASS_TEXTS[value] = repr(value)
        return text
    for method in ("toDict", "model_dump"):
        dump = getattr(value, method, None)
        if callable(dump):
            try:
                dumped = dump()
            except Exception:
                break
            return redacted_mapping(dumped) if isinstance(dumped, Mapping) else dumped
    return repr(value)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "...[truncated]"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrubbed(attributes: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    """``attributes`` with every secret replaced in their text values."""
    if not secrets:
        return attributes
    return {k: scrub(v, secrets) if isinstance(v, str) else v for k, v in attributes.items()}


def message_attributes(prefix: str, messages: Iterable[Any]) -> dict[str, str]:
    """``llm.input_messages.N.message.role`` / ``.content`` (or output) for chat ``messages``."""
    found: dict[str, str] = {}
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        key = f"{prefix}.{index}."
        role = message.get("role")
        if isinstance(role, str):
            found[key + MessageAttributes.MESSAGE_ROLE] = role
        content = message.get("content")
        if content is not None:
            text = content if isinstance(content, str) else json_text(content)
            found[key + MessageAttributes.MESSAGE_CONTENT] = _bounded(text)
    return found


INPUT_MESSAGES: Final = SpanAttributes.LLM_INPUT_MESSAGES
OUTPUT_MESSAGES: Final = SpanAttributes.LLM_OUTPUT_MESSAGES
