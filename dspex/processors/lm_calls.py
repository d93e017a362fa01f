"""A prediction's LM calls in its result: what the dashboard's drill-down shows for one example.

The predictor logs every LM call of a task while it runs (:mod:`dspex.lm.call_log`, on unless
started with ``--no-record-lm-calls``) and, once the run ends, writes them into the record's
``lm_call_log`` (:class:`~dspex.schemas.lm_calls.LMCallRecord`): the model, the messages sent, the
completion text and tool calls, tokens, cost, latency and whether the cache answered.

DESIGN: the log travels in the prediction (and its score record) rather than a topic of its own,
so the drill-down reads it with the score and a purge or the topics' retention removes it with
them. To keep a result small whatever the program sends, every text is bounded: each message and
completion to :data:`MAX_TEXT_CHARS`, the texts of all the calls of one example together to
:data:`MAX_EXAMPLE_CHARS` (once spent, later calls keep their numbers, their texts only the
marker of what was cut), and at most :data:`~dspex.lm.call_log.MAX_LOGGED_CALLS` calls
(``lm_calls_unlogged`` counts the rest). A cut text keeps its head and tail around
``…[truncated N chars]…``; images, audio and files are placeholders, base64 data inside a text
too. The LM's API key is replaced wherever it appears.
"""

from __future__ import annotations

import json
import os
import re
import weakref
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import TypeAdapter

from dspex.lm.call_log import LMCall, LMCallLog, current_log, logging_lm_calls
from dspex.observability.tracing.attributes import REDACTED, scrub
from dspex.schemas.lm_calls import LMCallRecord

__all__ = [
    "MAX_EXAMPLE_CHARS",
    "MAX_TEXT_CHARS",
    "TextBudget",
    "call_records",
    "call_values",
    "logged_fields",
    "logged_lm_calls",
]

MAX_TEXT_CHARS: Final = 4096  # of each message, completion or tool call's arguments
MAX_EXAMPLE_CHARS: Final = 32_768  # of all the texts of one example's calls together
_HEAD_SHARE: Final = 0.75  # of a cut text, the share kept from its start (the rest from its end)
_ERROR_CHARS: Final = 500
_RECORDS: Final = TypeAdapter(list[LMCallRecord])
_BASE64: Final = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,[A-Za-z0-9+/=]{64,}")


def logged_lm_calls(enabled: bool) -> AbstractContextManager[LMCallLog | None]:
    """A log of the LM calls made inside the block when ``enabled``, else nothing (None)."""
    return logging_lm_calls() if enabled else nullcontext()


def logged_fields() -> dict[str, Any]:
    """The record fields (``lm_call_log``, ``lm_calls_unlogged``) of the calls logged so far in
    this context, as plain values the record validates: empty without a log or without calls."""
    log = current_log()
    if log is None or not (log.calls or log.dropped):
        return {}
    fields: dict[str, Any] = {"lm_call_log": call_values(log.calls)}
    if log.dropped:
        fields["lm_calls_unlogged"] = log.dropped
    return fields


@dataclass
class TextBudget:
    """How many characters of text an example's calls may still keep, and the cap of each text."""

    left: int = MAX_EXAMPLE_CHARS
    each: int = MAX_TEXT_CHARS
    cut: int = field(default=0)  # characters left out of the call being written

    def keep(self, text: str) -> str:
        """``text`` within both bounds, spending the budget; what is left out counts in ``cut``."""
        limit = min(self.each, self.left)
        if len(text) <= limit:
            self.left -= len(text)
            return text
        self.left -= limit
        self.cut += len(text) - limit
        return _shortened(text, limit)


def call_records(calls: Iterable[LMCall], budget: TextBudget | None = None) -> list[LMCallRecord]:
    """The result's records of ``calls``, in order, their texts within ``budget`` (a fresh one
    per example by default)."""
    # One validation of plain values (in pydantic-core) costs less than building each model in Python.
    return _RECORDS.validate_python(call_values(calls, budget))


def call_values(calls: Iterable[LMCall], budget: TextBudget | None = None) -> list[dict[str, Any]]:
    """:func:`call_records` as plain values (what a record's validation turns into the models)."""
    spend = budget if budget is not None else TextBudget()
    secrets: dict[int, tuple[str, ...]] = {}
    records: list[dict[str, Any]] = []
    for call in calls:
        known = secrets.get(id(call.lm))
        if known is None:
            known = secrets[id(call.lm)] = _secrets_of(call.lm)
        records.append(_call_record(call, spend, known))
    return records


def _call_record(call: LMCall, budget: TextBudget, secrets: tuple[str, ...]) -> dict[str, Any]:
    budget.cut = 0
    messages = [
        {
            "role": str(message.get("role", "")),
            "content": budget.keep(_clean(_message_text(message), secrets)),
        }
        for message in call.messages
    ]
    response = call.response
    fields: dict[str, Any] = {"model": str(getattr(call.lm, "model", "") or "")}
    if response is not None:
        usage = response.usage
        fields.update(
            model=response.model or fields["model"],
            completion=budget.keep(_clean(response.text or "", secrets)),
            tool_calls=_tool_calls(response.tool_calls, budget, secrets),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=float(usage.cost_usd),
            cache_hit=response.cached,
        )
    elif call.error is not None:
        text = f"{type(call.error).__name__}: {call.error}"
        fields["error"] = _shortened(_clean(text, secrets), _ERROR_CHARS)
    fields.update(
        messages=messages,
        latency_s=max(float(call.duration_s), 0.0),
        start_s=max(float(call.start_s), 0.0),
        truncated_chars=budget.cut,
    )
    return fields


def _message_text(message: Mapping[str, Any]) -> str:
    """A chat message's content as one text: media parts as placeholders, its tool calls appended."""
    content = message.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "\n".join(_part_text(part) for part in content)
    else:
        text = _json(content)
    calls = message.get("tool_calls")
    if calls:
        text = f"{text}\n[tool_calls] {_json(calls)}" if text else f"[tool_calls] {_json(calls)}"
    return text


def _part_text(part: Any) -> str:
    if not isinstance(part, Mapping):
        return str(part)
    kind = part.get("type")
    if kind == "text":
        return str(part.get("text", ""))
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        return f"[image: {_where(str(url or ''))}]"
    if kind == "input_audio":
        audio = part.get("input_audio")
        form = audio.get("format") if isinstance(audio, Mapping) else None
        data = audio.get("data") if isinstance(audio, Mapping) else None
        return f"[audio: {form or '?'} ({len(str(data or ''))} chars)]"
    if kind == "file":
        return "[file]"
    return f"[{kind or 'part'}]"


def _where(url: str) -> str:
    """A media URL as shown: a data URI by its type and size, any other URL cut to 200 chars."""
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        return f"{head} ({len(data)} chars)"
    return url if len(url) <= 200 else url[:200] + "…"


def _clean(text: str, secrets: tuple[str, ...]) -> str:
    if "base64," in text:
        text = _BASE64.sub(
            lambda found: f"[data: {found.group(1)};base64 ({len(found.group(0))} chars)]", text
        )
    return scrub(text, secrets) if secrets else text


def _data_placeholder(found: re.Match[str]) -> str:
    return f"[data: {found.group(1)};base64 ({len(found.group(0))} chars)]"


def _tool_calls(
    calls: list[dict[str, Any]] | None, budget: TextBudget, secrets: tuple[str, ...]
) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    kept = []
    for call in calls:
        function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
        arguments = function.get("arguments") if isinstance(function, Mapping) else None
        text = arguments if isinstance(arguments, str) else _json(arguments)
        kept.append(
            {
                "id": call.get("id"),
                "name": function.get("name") if isinstance(function, Mapping) else None,
                "arguments": budget.keep(_clean(text, secrets)),
            }
        )
    return kept


def _shortened(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters: head and tail around a marker of what is left out."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return f"…[truncated {len(text)} chars]…"
    head = int(limit * _HEAD_SHARE)
    tail = limit - head
    left_out = len(text) - head - tail
    return f"{text[:head]}…[truncated {left_out} chars]…{text[len(text) - tail :] if tail else ''}"


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _secrets_of(lm: Any) -> tuple[str, ...]:
    """The key ``lm`` sends (given, or read from its ``api_key_env``): never kept in a result."""
    try:
        given = _GIVEN_KEYS[lm]
    except (KeyError, TypeError):
        given = _given_keys(lm)
        with suppress(TypeError):  # an LM that cannot be weakly referenced is read each time
            _GIVEN_KEYS[lm] = given
    env = getattr(lm, "api_key_env", None)
    from_env = _secret(os.environ.get(env)) if isinstance(env, str) else None
    return (*given, from_env) if from_env else given


# The keys LMs were given, per LM object (read once: an LM keeps its key for its life).
_GIVEN_KEYS: weakref.WeakKeyDictionary[Any, tuple[str, ...]] = weakref.WeakKeyDictionary()


def _given_keys(lm: Any) -> tuple[str, ...]:
    kwargs = getattr(lm, "kwargs", None)
    candidates: list[Any] = [getattr(lm, "_api_key", None), getattr(lm, "api_key", None)]
    if isinstance(kwargs, Mapping):
        candidates.append(kwargs.get("api_key"))
    return tuple(secret for secret in map(_secret, candidates) if secret)


def _secret(value: Any) -> str | None:
    secret = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    return secret if isinstance(secret, str) and len(secret) >= 4 and secret != REDACTED else None
