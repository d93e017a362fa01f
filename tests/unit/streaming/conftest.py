"""A scripted LM that streams: each call sends its chunks to the streamify sink, then answers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from dspex.lm import BaseLM, LMResponse, Usage
from dspex.lm.sse import ChatChunk, open_stream_sink


class StreamingLM(BaseLM):
    """Answers each call with the next script: a list of text chunks, sent as a stream when asked.

    ``calls`` counts the calls; ``streamed`` counts those that streamed.
    """

    def __init__(self, scripts: Sequence[Sequence[str]], *, delay: float = 0.0) -> None:
        super().__init__("scripted", "chat", 0.0, 1000, False)
        self.scripts = [list(script) for script in scripts]
        self.delay = delay
        self.calls = 0
        self.streamed = 0

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], *, rollout_id: int | None = None, **overrides: Any
    ) -> LMResponse:
        script = self.scripts[self.calls % len(self.scripts)]
        self.calls += 1
        sink = open_stream_sink()
        if sink is not None:
            self.streamed += 1
            for index, text in enumerate(script):
                if self.delay:
                    await asyncio.sleep(self.delay)
                finish = "stop" if index == len(script) - 1 else None
                choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
                event = {"id": f"c{self.calls}", "model": "scripted", "choices": [choice]}
                await sink.send(ChatChunk.from_openai(event, sink.predict_id))
        return LMResponse(text="".join(script), model="scripted", usage=Usage(lm_calls=1))


@pytest.fixture
def streaming_lm() -> type[StreamingLM]:
    return StreamingLM
