"""The simulated LM's fine-tuning API over HTTP (aiohttp's test client, the real app; a simulation)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from dspex.testing._finetune import tuned_gain
from dspex.testing._server import SimulatedLM, make_app
from dspex.testing.task import FINETUNE_MAX_GAIN, arithmetic_rows

Client = TestClient[Any, Any]
_SYSTEM = (
    "Your input fields are:\n1. `question` (str)\nYour output fields are:\n1. `answer` (str)\n"
    "In adhering to this structure, your objective is: \n        Answer the question."
)


def _messages(question: str, answer: str | None = None) -> list[dict[str, str]]:
    messages = [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": f"[[ ## question ## ]]\n{question}"},
    ]
    if answer is not None:
        messages.append(
            {"role": "assistant", "content": f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"}
        )
    return messages


def _file(rows: list[dict[str, str]], corrupt: bool = False) -> bytes:
    lines = []
    for row in rows:
        answer = str(int(row["answer"]) + 7) if corrupt else row["answer"]
        lines.append(json.dumps({"messages": _messages(row["question"], answer)}))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
async def sim() -> SimulatedLM:
    return SimulatedLM(finetune_seconds=0.05)


@pytest.fixture
async def client(sim: SimulatedLM) -> AsyncIterator[Client]:
    async with TestClient(TestServer(make_app(sim))) as made:
        yield made


async def _start(client: Client, data: bytes, **extra: Any) -> dict[str, Any]:
    form = FormData()
    form.add_field("purpose", "fine-tune")
    form.add_field("file", data, filename="train.jsonl", content_type="application/jsonl")
    uploaded = await (await client.post("/v1/files", data=form)).json()
    body = {"model": "arith", "training_file": uploaded["id"], "suffix": "t", **extra}
    response = await client.post("/v1/fine_tuning/jobs", json=body)
    assert response.status == 200, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def _ended(client: Client, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            job: dict[str, Any] = await (await client.get(f"/v1/fine_tuning/jobs/{job_id}")).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.01)


async def _accuracy(client: Client, model: str, rows: list[dict[str, str]]) -> float:
    correct = 0
    for row in rows:
        body = {"model": model, "messages": _messages(row["question"])}
        answer = await (await client.post("/v1/chat/completions", json=body)).json()
        text = answer["choices"][0]["message"]["content"]
        correct += re.findall(r"-?\d+", text)[-1:] == [row["answer"]]
    return correct / len(rows)


async def test_a_job_goes_through_its_stages_to_a_tuned_model_that_answers_better(client: Client) -> None:
    job = await _start(client, _file(arithmetic_rows(20, seed=1)), metadata={"run": "r1"})
    assert job["status"] == "validating_files" and job["metadata"] == {"run": "r1"}
    done = await _ended(client, job["id"])
    assert done["status"] == "succeeded" and done["fine_tuned_model"] == f"ft:arith:t:{job['id']}"
    assert tuned_gain(done["fine_tuned_model"]) == FINETUNE_MAX_GAIN  # 20 correct examples: the cap
    events = (await (await client.get(f"/v1/fine_tuning/jobs/{job['id']}/events")).json())["data"]
    assert "New fine-tuned model" in events[0]["message"] and "Created" in events[-1]["message"]
    held_out = arithmetic_rows(200, seed=2)
    base, tuned = (
        await _accuracy(client, "arith", held_out),
        await _accuracy(client, done["fine_tuned_model"], held_out),
    )
    assert tuned >= base + 0.15, (base, tuned)


async def test_corrupted_labels_give_no_gain(client: Client) -> None:
    job = await _start(client, _file(arithmetic_rows(20, seed=1), corrupt=True))
    done = await _ended(client, job["id"])
    assert done["status"] == "succeeded" and tuned_gain(done["fine_tuned_model"]) == 0.0
    held_out = arithmetic_rows(200, seed=2)
    base, tuned = (
        await _accuracy(client, "arith", held_out),
        await _accuracy(client, done["fine_tuned_model"], held_out),
    )
    assert abs(tuned - base) < 0.1, (base, tuned)


async def test_a_bad_line_fails_the_job_naming_the_line(client: Client) -> None:
    lines = _file(arithmetic_rows(12)).splitlines()
    lines[4] = b'{"messages": [{"role": "user", "content": "no answer"}]}'
    done = await _ended(client, (await _start(client, b"\n".join(lines)))["id"])
    assert done["status"] == "failed" and done["fine_tuned_model"] is None
    assert done["error"]["code"] == "invalid_training_file" and "Line 5" in done["error"]["message"]
    lines[4] = b"{not json"
    done = await _ended(client, (await _start(client, b"\n".join(lines)))["id"])
    assert "Line 5 is not valid JSON" in done["error"]["message"]


async def test_jobs_list_newest_first_by_pages_and_cancel(client: Client, sim: SimulatedLM) -> None:
    sim.configure(finetune_seconds=30.0)
    ids = [(await _start(client, _file(arithmetic_rows(12, seed=s))))["id"] for s in range(3)]
    first = await (await client.get("/v1/fine_tuning/jobs", params={"limit": "2"})).json()
    assert [j["id"] for j in first["data"]] == ids[:0:-1] and first["has_more"] is True
    rest = await (await client.get("/v1/fine_tuning/jobs", params={"limit": "2", "after": ids[1]})).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False
    cancelled = await (await client.post(f"/v1/fine_tuning/jobs/{ids[0]}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    again = await client.post(f"/v1/fine_tuning/jobs/{ids[0]}/cancel")
    assert again.status == 400 and "already ended" in (await again.json())["error"]["message"]
    assert (await client.get("/v1/fine_tuning/jobs/ftjob-nope")).status == 404
    missing_file = await client.post(
        "/v1/fine_tuning/jobs", json={"model": "arith", "training_file": "file-x"}
    )
    assert missing_file.status == 400


async def test_the_fail_knob_fails_jobs_while_running(client: Client, sim: SimulatedLM) -> None:
    sim.configure(finetune_fail=1.0)
    done = await _ended(client, (await _start(client, _file(arithmetic_rows(12))))["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "training_failed"
    assert sim.stats()["fine_tuning"]["by_status"] == {"failed": 1}
