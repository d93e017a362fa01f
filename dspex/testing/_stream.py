"""The simulated LM's streamed answers: a chat.completion payload cut into OpenAI's SSE chunks.

A request with ``"stream": true`` gets ``text/event-stream``: one ``data: {...}`` event per
``chat.completion.chunk``, as OpenAI sends them. Per choice: a first delta with the role, the content
in pieces of ``chunk_chars`` characters, each tool call's ``id``/``name`` and then its ``arguments``
in pieces, and a last delta carrying ``finish_reason``. With ``stream_options.include_usage`` every
chunk has ``"usage": null`` and one more chunk with no choices carries the usage. Then
``data: [DONE]``. Joined, the deltas give back exactly the non-streamed message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["DONE_EVENT", "sse_event", "stream_chunks"]

DONE_EVENT = b"data: [DONE]\n\n"


def sse_event(chunk: Mapping[str, Any]) -> bytes:
    """One server-sent event holding ``chunk`` as compact JSON."""
    return b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


def _pieces(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


def _deltas(message: Mapping[str, Any], chunk_chars: int) -> Iterator[dict[str, Any]]:
    """The deltas of one choice's message, role first, without the finish."""
    yield {"role": "assistant", "content": ""}
    for piece in _pieces(message.get("content") or "", chunk_chars):
        yield {"content": piece}
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call["function"]
        head = {"name": function["name"], "arguments": ""}
        yield {"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": head}]}
        for piece in _pieces(function["arguments"], chunk_chars):
            yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


def stream_chunks(
    payload: Mapping[str, Any], *, chunk_chars: int, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects that stream ``payload`` (a chat.completion)."""
    envelope = {key: payload[key] for key in ("id", "created", "model", "system_fingerprint")}
    envelope["object"] = "chat.completion.chunk"
    if include_usage:
        envelope["usage"] = None

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**envelope, "choices": choices}

    for choice in payload["choices"]:
        index = choice["index"]
        for delta in _deltas(choice["message"], chunk_chars):
            yield chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])
        finish = choice["finish_reason"]
        yield chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}])
    if include_usage:
        yield {**envelope, "choices": [], "usage": payload["usage"]}
