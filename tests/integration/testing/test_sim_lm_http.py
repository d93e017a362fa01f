"""The simulated LM over real HTTP: both adapters' formats, usage, counters, embeddings, the log."""

from __future__ import annotations

import json

import dspy
import httpx

from dspex.testing import SimulatedLMServer, arithmetic_rows

SIGNATURE = dspy.ChainOfThought("question -> answer").predict.signature
DEMOS = [dspy.Example(**row) for row in arithmetic_rows(3, seed=5)]


def _chat_body(question: str, *, json_mode: bool = False, seed: int | None = None) -> dict:
    adapter = dspy.JSONAdapter() if json_mode else dspy.ChatAdapter()
    body: dict = {
        "model": "simulated",
        "messages": adapter.format(SIGNATURE, demos=DEMOS, inputs={"question": question}),
    }
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    if seed is not None:
        body["seed"] = seed
    return body


def test_chat_format_answer_parses_with_dspy_and_carries_usage(sim: SimulatedLMServer) -> None:
    response = httpx.post(f"{sim.base_url}/chat/completions", json=_chat_body("What is 12 + 30?"))
    assert response.status_code == 200
    data = response.json()
    assert (
        data["object"] == "chat.completion"
        and data["model"] == "simulated"
        and data["id"].startswith("chatcmpl-")
    )
    assert data["choices"][0]["finish_reason"] == "stop" and isinstance(data["created"], int)
    parsed = dspy.ChatAdapter().parse(SIGNATURE, data["choices"][0]["message"]["content"])
    assert parsed["answer"].lstrip("-").isdigit() and parsed["reasoning"]
    usage = data["usage"]
    assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    stats = sim.control.stats()
    assert (
        stats["prompt_tokens"] == usage["prompt_tokens"]
        and stats["completion_tokens"] == usage["completion_tokens"]
    )


def test_json_format_answer_is_a_json_object(sim: SimulatedLMServer) -> None:
    response = httpx.post(
        f"{sim.base_url}/chat/completions", json=_chat_body("What is 6 * 7?", json_mode=True)
    )
    content = json.loads(response.json()["choices"][0]["message"]["content"])
    assert set(content) == {"reasoning", "answer"}


def test_counters_are_exact_and_answers_deterministic(sim: SimulatedLMServer) -> None:
    bodies = [_chat_body(row["question"], seed=i) for i, row in enumerate(arithmetic_rows(20, seed=8))]
    with httpx.Client() as client:
        first = [client.post(f"{sim.base_url}/chat/completions", json=b).json() for b in bodies]
        again = [client.post(f"{sim.base_url}/chat/completions", json=b).json() for b in bodies]
        bad = client.post(f"{sim.base_url}/chat/completions", content=b"not json")
    assert bad.status_code == 400
    assert [r["choices"] for r in first] == [r["choices"] for r in again]
    stats = sim.control.stats()
    assert stats["requests_total"] == 41 and stats["completions_ok"] == 40
    assert stats["by_status"] == {"200": 40, "400": 1}
    assert stats["correct"] + stats["incorrect"] == 40
    assert stats["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in first + again)
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1


def test_request_log_keeps_the_latest_requests_and_reset_zeroes(sim: SimulatedLMServer) -> None:
    for seed in range(3):
        httpx.post(f"{sim.base_url}/chat/completions", json=_chat_body("What is 1 + 1?", seed=seed))
    log = sim.control.requests(limit=2)
    assert [entry["seed"] for entry in log] == [1, 2]
    assert all(entry["status"] == 200 and entry["text"] == "What is 1 + 1?" for entry in log)
    assert log[0]["prompt_hash"] == log[1]["prompt_hash"] and log[0]["request_hash"] != log[1]["request_hash"]
    assert log[0]["t_start"] <= log[0]["t_end"] <= log[1]["t_start"]
    assert sim.control.reset()["requests_total"] == 0
    assert sim.control.requests() == []


def test_embeddings_are_deterministic_and_similar_texts_closer(sim: SimulatedLMServer) -> None:
    texts = ["What is 347 + 28?", "What is 347 + 29?", "Name the capital of France."]
    first = httpx.post(f"{sim.base_url}/embeddings", json={"model": "simulated-embed", "input": texts}).json()
    again = httpx.post(
        f"{sim.base_url}/embeddings", json={"model": "simulated-embed", "input": texts[0]}
    ).json()
    vectors = [item["embedding"] for item in first["data"]]
    assert again["data"][0]["embedding"] == vectors[0] and len(vectors[0]) == 64
    dot = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors]
    assert dot[1] > dot[2]
    assert first["usage"]["prompt_tokens"] > 0
    assert sim.control.stats()["embeddings_ok"] == 2


def test_models_endpoint_lists_known_models(sim: SimulatedLMServer) -> None:
    sim.control.configure(models=["sim-a", "sim-b"])
    data = httpx.get(f"{sim.base_url}/models").json()
    assert [m["id"] for m in data["data"]] == ["sim-a", "sim-b"]


def test_a_body_with_nan_is_a_400_not_a_crash(sim: SimulatedLMServer) -> None:
    raw = b'{"model": "simulated", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'
    response = httpx.post(f"{sim.base_url}/chat/completions", content=raw)
    assert response.status_code == 400 and "NaN" in response.json()["error"]["message"]
