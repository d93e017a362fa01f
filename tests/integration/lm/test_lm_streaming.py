"""Streaming over HTTP: the simulated LM's slow server-sent events, and a scripted SSE server for faults."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import dspex
from dspex.lm import LM, RetryPolicy, track_usage
from dspex.lm.sse import ChatChunk, ChunkSink, open_stream_sink, stream_route
from dspex.streaming import StreamListener, StreamResponse, streamify
from dspex.testing import SimulatedLMServer

STREAM_DELAY = 0.05


@pytest.fixture
def slow_sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(
        in_process=True, stream_delay=STREAM_DELAY, stream_chunk_chars=3, seed=1
    ) as server:
        yield server


def answer_program(**options: Any) -> Any:
    listeners = [StreamListener(signature_field_name="answer")]
    return streamify(dspex.Predict("question -> answer"), stream_listeners=listeners, **options)


def timed(started: float, item: Any) -> tuple[float, Any]:
    return time.perf_counter() - started, item


def check_arrival(seen: list[tuple[float, Any]]) -> None:
    """Chunks arrived one by one, the first well before the whole answer was in."""
    chunk_times = [at for at, item in seen if isinstance(item, StreamResponse)]
    done_at, result = seen[-1]
    assert isinstance(result, dspex.Prediction)
    assert len(chunk_times) >= 2
    assert done_at - chunk_times[0] >= 3 * STREAM_DELAY
    text = "".join(item.chunk for _, item in seen if isinstance(item, StreamResponse))
    assert text == result.answer


async def test_chunks_arrive_before_the_whole_answer(slow_sim: SimulatedLMServer, tmp_path: Path) -> None:
    lm = LM("sim/slow", api_base=slow_sim.base_url, cache_dir=tmp_path)
    started = time.perf_counter()
    with dspex.context(lm=lm), track_usage() as run:
        seen = [timed(started, item) async for item in answer_program()(question="What is 2 + 3?")]
    check_arrival(seen)
    stats = slow_sim.control.stats()
    assert run.usage.lm_calls == 1 and run.usage.prompt_tokens == stats["prompt_tokens"] > 0
    assert run.usage.completion_tokens == stats["completion_tokens"] > 0


def test_sync_streaming_reads_chunks_before_the_whole_answer(
    slow_sim: SimulatedLMServer, tmp_path: Path
) -> None:
    lm = LM("sim/slow", api_base=slow_sim.base_url, cache_dir=tmp_path)
    started = time.perf_counter()
    with dspex.context(lm=lm):
        seen = [
            timed(started, item) for item in answer_program(async_streaming=False)(question="What is 4 + 4?")
        ]
    check_arrival(seen)


async def test_the_cache_keeps_the_whole_streamed_answer(slow_sim: SimulatedLMServer, tmp_path: Path) -> None:
    lm = LM("sim/slow", api_base=slow_sim.base_url, cache_dir=tmp_path)
    with dspex.context(lm=lm):
        first = [item async for item in answer_program()(question="What is 1 + 1?")]
        with track_usage() as again:
            second = [item async for item in answer_program()(question="What is 1 + 1?")]
        plain = await dspex.Predict("question -> answer").acall(question="What is 1 + 1?")
    assert len(first) > 1 and len(second) == 1  # a cached answer does not stream
    assert second[0].answer == first[-1].answer == plain.answer
    assert again.usage.cache_hits == 1
    assert slow_sim.control.stats()["completions_ok"] == 1


# -- a scripted SSE server, for faults the simulated LM does not make ------------------------------


def event(content: str | None, *, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    chunk = {"id": "c1", "model": "scripted", "choices": choices, "usage": usage}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


STREAM = [event("Hello"), event(" world"), event(None, finish="stop"),
          event(None, usage={"prompt_tokens": 11, "completion_tokens": 2})]  # fmt: skip


class SSEServer:
    """Answers each request with the next script step: 'ok', 'fail' (a 503), 'break' (two chunks, then
    the connection drops) or 'json' (a plain JSON answer, as a server that does not stream)."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        step = self.steps.pop(0) if self.steps else "ok"
        if step == "fail":
            return web.json_response({"error": {"message": "busy"}}, status=503)
        if step == "json":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello world"},
                "finish_reason": "stop",
            }
            usage = {"prompt_tokens": 11, "completion_tokens": 2}
            return web.json_response({"id": "c1", "model": "scripted", "usage": usage, "choices": [choice]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index, data in enumerate(STREAM):
            if step == "break" and index == 2:
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(data)
            await asyncio.sleep(0.01)
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture
async def sse_server() -> AsyncIterator[SSEServer]:
    server = SSEServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    yield server
    await runner.cleanup()


class Collect:
    """A route that streams every call into a list."""

    def __init__(self) -> None:
        self.chunks: list[ChatChunk] = []
        self.predict_id = None

    def open(self) -> ChunkSink:
        return self

    async def send(self, chunk: ChatChunk) -> None:
        self.chunks.append(chunk)


def scripted_lm(server: SSEServer, **options: Any) -> LM:
    policy = RetryPolicy(base_delay=0.01, max_delay=0.02)
    return LM("openai/gpt-4o-mini", api_base=server.base_url, cache=False, retry_policy=policy, **options)


async def test_a_streamed_call_counts_usage_and_cost_like_any_call(sse_server: SSEServer) -> None:
    route = Collect()
    with stream_route(route), track_usage() as run:
        response = await scripted_lm(sse_server).acomplete([{"role": "user", "content": "hi"}])
    assert response.text == "Hello world" and response.finish_reason == "stop"
    assert [c.choices[0].delta.content for c in route.chunks] == ["Hello", " world", None]
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.lm_calls) == (11, 2, 1)
    assert run.usage.cost_usd > 0  # gpt-4o-mini has a price
    assert sse_server.bodies[0]["stream"] is True
    assert sse_server.bodies[0]["stream_options"] == {"include_usage": True}


async def test_a_failure_before_the_first_chunk_is_retried(sse_server: SSEServer) -> None:
    sse_server.steps = ["fail", "ok"]
    route = Collect()
    with stream_route(route):
        response = await scripted_lm(sse_server).acomplete([{"role": "user", "content": "hi"}])
    assert response.text == "Hello world" and len(sse_server.bodies) == 2
    assert "".join(c.choices[0].delta.content or "" for c in route.chunks) == "Hello world"


async def test_a_stream_that_breaks_off_is_not_retried(sse_server: SSEServer) -> None:
    sse_server.steps = ["break", "ok"]
    with stream_route(Collect()), pytest.raises(dspex.LMUnexpectedError, match="broke off after 2 chunks"):
        await scripted_lm(sse_server).acomplete([{"role": "user", "content": "hi"}])
    assert len(sse_server.bodies) == 1


async def test_a_server_that_does_not_stream_gives_one_chunk(sse_server: SSEServer) -> None:
    sse_server.steps = ["json"]
    route = Collect()
    with stream_route(route), track_usage() as run:
        response = await scripted_lm(sse_server).acomplete([{"role": "user", "content": "hi"}])
    assert response.text == "Hello world" and run.usage.prompt_tokens == 11
    assert [c.choices[0].delta.content for c in route.chunks] == ["Hello world"]


async def test_outside_streamify_nothing_streams(sse_server: SSEServer) -> None:
    sse_server.steps = ["json"]
    assert open_stream_sink() is None
    response = await scripted_lm(sse_server).acomplete([{"role": "user", "content": "hi"}])
    assert response.text == "Hello world" and "stream" not in sse_server.bodies[0]
