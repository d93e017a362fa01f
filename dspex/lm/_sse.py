"""One streamed chat-completion attempt: ``"stream": true``, server-sent events in, the whole answer out.

The LM client's non-streamed path reads one JSON body; this one (used only while
:func:`dspex.streamify` asks for it, see :mod:`dspex.lm.sse`) asks for OpenAI's server-sent events
with ``stream_options.include_usage``, forwards each ``chat.completion.chunk`` to the call's sink as
it arrives, and assembles the chunks into the same ``chat.completion`` object the non-streamed path
returns, usage included, so that the cache, usage, cost, limiter and callbacks see one ordinary answer.

Retries happen only before the first chunk: once a listener has seen part of an answer, a second
attempt would repeat it, so a failure after that is an :class:`~dspex.errors.LMUnexpectedError`,
which the client never retries.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from dspex.errors import LMConnectionError, LMError, LMServerError, LMTimeoutError, LMUnexpectedError
from dspex.lm.retry import error_for_status
from dspex.lm.sse import ChatChunk, ChunkSink
from dspex.lm.transport import get_session

if TYPE_CHECKING:
    from dspex.lm.client import LM

__all__ = ["send_streamed"]

_STREAM_OPTIONS = {"stream": True, "stream_options": {"include_usage": True}}
_DONE = "[DONE]"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


async def send_streamed(
    lm: LM, sink: ChunkSink, url: str, body: dict[str, Any], check: Any
) -> dict[str, Any]:
    """One attempt of ``body`` as a stream: chunks to ``sink``, the assembled answer returned.

    ``check`` (the non-streamed answer check) applies when the endpoint ignores ``stream`` and
    answers with one JSON body; that answer goes to the sink as a single chunk.
    """
    answer = _Answer()
    try:
        async with asyncio.timeout(lm.timeout):
            await _exchange(lm, sink, url, body, check, answer)
    except LMError as exc:
        raise _after_chunks(lm, answer, exc) from exc
    except aiohttp.ConnectionTimeoutError as exc:
        raise _after_chunks(
            lm, answer, LMConnectionError(lm._describe(f"could not reach {url} ({exc!r})"))
        ) from exc
    except TimeoutError as exc:
        detail = f"no whole answer within {lm.timeout}s ({type(exc).__name__})"
        raise _after_chunks(lm, answer, LMTimeoutError(lm._describe(detail))) from exc
    except (aiohttp.ClientError, OSError, ValueError) as exc:  # refused, reset, dropped mid-stream
        raise _after_chunks(
            lm, answer, LMConnectionError(lm._describe(f"stream from {url} failed ({exc!r})"))
        ) from exc
    return answer.completion(lm)


async def _exchange(
    lm: LM, sink: ChunkSink, url: str, body: dict[str, Any], check: Any, answer: _Answer
) -> None:
    session = await get_session()
    payload = _ENCODER.encode({**body, **_STREAM_OPTIONS}).encode("utf-8")
    async with session.post(
        url, data=payload, headers=lm._headers(), timeout=lm._http_timeout, allow_redirects=False
    ) as response:
        if response.status >= 400:
            raw = await response.read()
            text = raw.decode(response.charset or "utf-8", errors="replace")
            raise error_for_status(
                response.status,
                text,
                response.headers,
                model=lm.model,
                api_base=lm.api_base,
                secret=lm._key(),
            )
        if response.content_type != "text/event-stream":
            await _whole_answer(lm, sink, check(lm, await response.read()), answer)
            return
        async for event in _events(response.content):
            if event == _DONE:
                return
            await _forward(lm, sink, _parse_event(lm, event), answer)
    if not answer.finished:
        raise LMServerError(lm._describe("the stream ended before the answer did"), status=200)


async def _whole_answer(lm: LM, sink: ChunkSink, data: dict[str, Any], answer: _Answer) -> None:
    """An endpoint that ignored ``stream``: its one answer is the stream's one chunk."""
    event = {
        "id": data.get("id"),
        "model": data.get("model"),
        "choices": [
            {
                "index": choice.get("index", 0),
                "delta": choice.get("message") or {},
                "finish_reason": choice.get("finish_reason"),
            }
            for choice in data["choices"]
        ],
        "usage": data.get("usage"),
    }
    await _forward(lm, sink, event, answer)


async def _forward(lm: LM, sink: ChunkSink, event: dict[str, Any], answer: _Answer) -> None:
    answer.add(event)
    if event.get("choices"):  # the usage-only last chunk has none: nothing for a listener to read
        await sink.send(ChatChunk.from_openai(event, sink.predict_id))
        answer.sent += 1


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined with newlines)."""
    pending = b""
    data: list[str] = []
    async for block in content.iter_any():
        pending += block
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            # other fields (event:, id:, retry:) and comments (":") carry nothing we use
    if data:
        yield "\n".join(data)


def _parse_event(lm: LM, data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except json.JSONDecodeError as exc:
        raise LMServerError(
            lm._describe(f"sent a stream event that is not JSON: {data[:200]!r}"), status=200
        ) from exc
    if not isinstance(event, dict):
        raise LMServerError(lm._describe("sent a stream event that is not a JSON object"), status=200)
    if "error" in event:  # some providers report a failure inside the stream
        raise LMServerError(
            lm._describe(f"reported an error in the stream: {event['error']!r:.300}"), status=200
        )
    return event


def _after_chunks(lm: LM, answer: _Answer, exc: LMError) -> LMError:
    """``exc`` while nothing was forwarded yet (retried as usual); after that, not retried."""
    if not answer.sent:
        return exc
    return LMUnexpectedError(
        lm._describe(f"the stream broke off after {answer.sent} chunks: {exc}"), status=exc.status
    )


@dataclass
class _Choice:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None

    def add(self, delta: Mapping[str, Any]) -> None:
        if delta.get("role"):
            self.role = delta["role"]
        if delta.get("content"):
            self.content.append(delta["content"])
        if delta.get("reasoning_content"):
            self.reasoning.append(delta["reasoning_content"])
        for call in delta.get("tool_calls") or ():
            self._add_call(call)

    def _add_call(self, part: Mapping[str, Any]) -> None:
        call = self.tool_calls.setdefault(
            int(part.get("index") or 0),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if part.get("id"):
            call["id"] = part["id"]
        if part.get("type"):
            call["type"] = part["type"]
        function = part.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": "".join(self.content)}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[index] for index in sorted(self.tool_calls)]
        return message


@dataclass
class _Answer:
    """The chunks seen so far, assembled; ``sent`` counts those forwarded to the sink."""

    id: str | None = None
    model: str | None = None
    choices: dict[int, _Choice] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    sent: int = 0

    def add(self, event: Mapping[str, Any]) -> None:
        self.id = self.id or event.get("id")
        self.model = self.model or event.get("model")
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        for raw in event.get("choices") or ():
            choice = self.choices.setdefault(int(raw.get("index") or 0), _Choice())
            choice.add(raw.get("delta") or {})
            choice.finish_reason = raw.get("finish_reason") or choice.finish_reason

    @property
    def finished(self) -> bool:
        return bool(self.choices) and all(choice.finish_reason for choice in self.choices.values())

    def completion(self, lm: LM) -> dict[str, Any]:
        """The ``chat.completion`` the chunks make up (what the non-streamed call would return)."""
        if not self.choices:
            raise LMServerError(lm._describe("streamed an answer without choices"), status=200)
        data: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "model": self.model,
            "choices": [
                {"index": index, "message": choice.message(), "finish_reason": choice.finish_reason}
                for index, choice in sorted(self.choices.items())
            ],
        }
        if self.usage is not None:
            data["usage"] = self.usage
        return data
