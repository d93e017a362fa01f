"""The simulated LM's streamed answers: OpenAI's SSE chunk format, slow enough to read mid-answer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

import dspex
from dspex.cli import simlm
from dspex.testing import SimLMConfig, SimulatedLMServer
from dspex.testing._completion import build_completion
from dspex.testing._stream import stream_chunks
from dspex.testing.sim_lm import _parser, config_from_args

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
    },
}
LOOKUP = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}


def chat(**options: Any) -> dict[str, Any]:
    return {"model": "sim", "messages": [{"role": "user", "content": "What is 12 + 30?"}], **options}


def cot(**options: Any) -> dict[str, Any]:
    """A ChainOfThought-style request: a few lines of answer to stream."""
    signature = dspex.Signature("question -> reasoning, answer")
    messages = dspex.ChatAdapter().format(signature, [], {"question": "What is 12 + 30?"})
    return {"model": "sim", "messages": messages, **options}


def joined(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The message the deltas of choice 0 make, as a client assembles it."""
    content, calls, finish = "", {}, None
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                slot = calls.setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] += call.get("function", {}).get("name") or ""
                slot["arguments"] += call.get("function", {}).get("arguments") or ""
            finish = choice["finish_reason"] or finish
    return {"content": content, "calls": [calls[i] for i in sorted(calls)], "finish": finish}


def test_the_chunks_join_into_the_unstreamed_message_and_end_with_usage() -> None:
    payload = build_completion(chat()).payload
    chunks = list(stream_chunks(payload, chunk_chars=3, include_usage=True))
    assert all(
        chunk["object"] == "chat.completion.chunk" and chunk["id"] == payload["id"] for chunk in chunks
    )
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(len(c["choices"][0]["delta"].get("content", "")) <= 3 for c in chunks[:-1])
    assert joined(chunks) == {
        "content": payload["choices"][0]["message"]["content"],
        "calls": [],
        "finish": "stop",
    }
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == payload["usage"]
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert "usage" not in list(stream_chunks(payload, chunk_chars=3, include_usage=False))[-1]


def test_tool_calls_stream_as_indexed_deltas() -> None:
    payload = build_completion(chat(tools=[ADD, LOOKUP])).payload
    message = payload["choices"][0]["message"]
    got = joined(list(stream_chunks(payload, chunk_chars=5, include_usage=False)))
    expected = [
        {"id": call["id"], "name": call["function"]["name"], "arguments": call["function"]["arguments"]}
        for call in message["tool_calls"]
    ]
    assert got["calls"] == expected and got["finish"] == "tool_calls"
    assert [json.loads(call["arguments"]) for call in got["calls"]] == [
        {"a": 12, "b": 30},
        {"q": "What is 12 + 30?"},
    ]


# ---------------------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(in_process=True, stream_delay=0.02, stream_chunk_chars=2) as server:
        yield server


def read_events(
    sim: SimulatedLMServer, body: dict[str, Any]
) -> tuple[list[tuple[float, str]], httpx.Response]:
    """Each ``data:`` event with the seconds since the request started."""
    start, events = time.perf_counter(), []
    with httpx.stream("POST", f"{sim.base_url}/chat/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append((time.perf_counter() - start, line[len("data: ") :]))
    return events, response


def test_chunks_arrive_before_the_whole_answer(sim: SimulatedLMServer) -> None:
    before = sim.control.stats()["completions_ok"]
    events, response = read_events(sim, cot(stream=True, stream_options={"include_usage": True}))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    unstreamed = httpx.post(f"{sim.base_url}/chat/completions", json=cot(), timeout=30).json()
    assert joined(chunks)["content"] == unstreamed["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == unstreamed["usage"]
    # about 2 characters per 20 ms: the first chunks were read long before the last
    assert len(chunks) > 10 and events[-1][0] - events[1][0] >= 0.9 * 0.02 * (len(chunks) - 2)
    assert sim.control.stats()["completions_ok"] == before + 2


def test_a_stream_during_an_outage_is_a_json_error(sim: SimulatedLMServer) -> None:
    sim.control.down()
    try:
        response = httpx.post(f"{sim.base_url}/chat/completions", json=chat(stream=True), timeout=30)
    finally:
        sim.control.up()
    assert response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable"


def test_bad_stream_options_are_a_400(sim: SimulatedLMServer) -> None:
    response = httpx.post(
        f"{sim.base_url}/chat/completions", json=chat(stream=True, stream_options=1), timeout=30
    )
    assert response.status_code == 400 and "stream_options" in response.json()["error"]["message"]


def test_the_stream_knobs_are_validated() -> None:
    assert SimLMConfig().updated(stream_delay=0.5, stream_chunk_chars=1).stream_chunk_chars == 1
    with pytest.raises(Exception, match="stream_chunk_chars"):
        SimLMConfig().updated(stream_chunk_chars=0)


def test_the_command_lines_take_the_stream_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _parser().parse_args(["--stream-delay", "0.05", "--stream-chunk-chars", "8"])
    config = config_from_args(args)
    assert (config.stream_delay, config.stream_chunk_chars) == (0.05, 8)
    served: list[SimLMConfig] = []
    monkeypatch.setattr(simlm, "serve", lambda config, **where: served.append(config))
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so that the command keeps its name
    simlm.register(app)
    result = CliRunner().invoke(app, ["sim-lm", "--stream-delay", "0.2", "--stream-chunk-chars", "3"])
    assert result.exit_code == 0, result.output
    assert [(c.stream_delay, c.stream_chunk_chars) for c in served] == [(0.2, 3)]
