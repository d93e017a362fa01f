"""Streamed chat completions: the chunks an LM call sends while the answer arrives, and where they go.

When :func:`dspex.streamify` runs a program, it installs a :class:`StreamRoute` for the duration of
the run. Every chat completion of :class:`~dspex.lm.LM` asks that route, through
:func:`open_stream_sink`, whether this call streams (DSPy streams only the predictors a listener
names, or all of them when there are no listeners) and, if it does, the LM asks the endpoint for
server-sent events (``"stream": true``) and sends one :class:`ChatChunk` per event to the sink as it
arrives. The call still returns the whole answer, with usage and cost counted as for any call.

A :class:`ChatChunk` has the attribute shape of OpenAI's ``chat.completion.chunk`` (and of litellm's
``ModelResponseStream``, which DSPy's listeners read): ``chunk.choices[0].delta.content``.

Nothing streams outside :func:`dspex.streamify`: the route is a context variable, unset by default.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = [
    "ChatChunk",
    "ChunkChoice",
    "ChunkDelta",
    "ChunkSink",
    "StreamRoute",
    "open_stream_sink",
    "stream_route",
]


@dataclass(frozen=True)
class ChunkDelta:
    """What one chunk adds to a choice's message (OpenAI's ``delta``); absent parts are None."""

    content: str | None = None
    role: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    provider_specific_fields: dict[str, Any] | None = None


@dataclass(frozen=True)
class ChunkChoice:
    """One choice of a chunk: its index, its delta, and the finish reason on the choice's last chunk."""

    index: int = 0
    delta: ChunkDelta = field(default_factory=ChunkDelta)
    finish_reason: str | None = None


@dataclass(frozen=True)
class ChatChunk:
    """One streamed piece of a chat completion.

    ``predict_id`` is ``id()`` of the predictor whose LM call produced it (None when no predictor
    was calling), which is how :func:`dspex.streamify` hands it to that predictor's listeners.

        chunk.choices[0].delta.content   # 'To get' (None for a chunk without text)
    """

    id: str | None
    model: str | None
    choices: list[ChunkChoice]
    predict_id: int | None = None

    @classmethod
    def from_openai(cls, event: Mapping[str, Any], predict_id: int | None = None) -> ChatChunk:
        """The chunk of one ``chat.completion.chunk`` event (a parsed SSE ``data:`` payload)."""
        return cls(
            id=event.get("id"),
            model=event.get("model"),
            choices=[_choice(raw) for raw in event.get("choices") or () if isinstance(raw, Mapping)],
            predict_id=predict_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's chunk shape (with ``predict_id``), as plain JSON-able values."""
        return asdict(self)

    def json(self) -> str:
        """The chunk as a JSON string (litellm's ``ModelResponseStream.json()``, used by
        :func:`dspex.streaming.streaming_response`)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


def _choice(raw: Mapping[str, Any]) -> ChunkChoice:
    delta = raw.get("delta") or {}
    return ChunkChoice(
        index=int(raw.get("index") or 0),
        delta=ChunkDelta(
            content=delta.get("content"),
            role=delta.get("role"),
            reasoning_content=delta.get("reasoning_content"),
            tool_calls=delta.get("tool_calls"),
            provider_specific_fields=delta.get("provider_specific_fields"),
        ),
        finish_reason=raw.get("finish_reason"),
    )


class ChunkSink(Protocol):
    """Where one LM call's chunks go."""

    @property
    def predict_id(self) -> int | None:
        """``id()`` of the calling predictor, stamped on every chunk (None: no predictor)."""

    async def send(self, chunk: ChatChunk) -> None:
        """Deliver one chunk (called on the LM call's event loop, in arrival order)."""


class StreamRoute(Protocol):
    """Decides, per LM call, whether it streams and where its chunks go."""

    def open(self) -> ChunkSink | None:
        """The sink for the LM call starting here, or None when this call should not stream."""


_ROUTE: contextvars.ContextVar[StreamRoute | None] = contextvars.ContextVar(
    "dspex_stream_route", default=None
)


def open_stream_sink() -> ChunkSink | None:
    """The sink of the LM call starting here (None, the usual case, when nothing streams)."""
    route = _ROUTE.get()
    return None if route is None else route.open()


@contextmanager
def stream_route(route: StreamRoute | None) -> Iterator[None]:
    """Within the block, LM calls ask ``route`` whether to stream (None: nothing streams)."""
    token = _ROUTE.set(route)
    try:
        yield
    finally:
        _ROUTE.reset(token)
