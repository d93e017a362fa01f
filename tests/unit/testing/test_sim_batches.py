"""The simulated LM's Files and Batch APIs over HTTP (aiohttp's test client, the real app)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from dspex.testing._server import SimulatedLM, make_app

Client = TestClient[Any, Any]


def _chat(question: str, seed: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "simulated",
        "messages": [
            {"role": "system", "content": "Your input fields are:\n1. `question` (str)"},
            {"role": "user", "content": f"[[ ## question ## ]]\n{question}"},
        ],
    }
    if seed is not None:
        body["seed"] = seed
    return body


def _jsonl(bodies: list[dict[str, Any]], *, prefix: str = "r") -> bytes:
    lines = [
        {"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for i, body in enumerate(bodies)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


async def _upload(client: Client, data: bytes, purpose: str = "batch") -> Any:
    form = FormData()
    form.add_field("purpose", purpose)
    form.add_field("file", data, filename="requests.jsonl", content_type="application/jsonl")
    return await client.post("/v1/files", data=form)


async def _run_batch(client: Client, data: bytes, **extra: Any) -> dict[str, Any]:
    uploaded = await (await _upload(client, data)).json()
    body = {"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    created = await (await client.post("/v1/batches", json={**body, **extra})).json()
    return created


async def _wait_done(client: Client, batch_id: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            batch = await (await client.get(f"/v1/batches/{batch_id}")).json()
            if batch["status"] in ("completed", "failed", "expired", "cancelled"):
                return batch
            await asyncio.sleep(0.01)


async def _lines(client: Client, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    text = await (await client.get(f"/v1/files/{file_id}/content")).text()
    return {entry["custom_id"]: entry for entry in map(json.loads, text.splitlines())}


@pytest.fixture
async def sim() -> SimulatedLM:
    return SimulatedLM()


@pytest.fixture
async def client(sim: SimulatedLM) -> AsyncIterator[Client]:
    async with TestClient(TestServer(make_app(sim))) as made:
        yield made


async def test_files_upload_list_read_and_delete(client: Client, sim: SimulatedLM) -> None:
    response = await _upload(client, b'{"a": 1}\n', purpose="fine-tune")
    assert response.status == 200
    stored = await response.json()
    assert stored["object"] == "file" and stored["bytes"] == 9 and stored["purpose"] == "fine-tune"
    assert stored["filename"] == "requests.jsonl" and stored["id"].startswith("file-")
    listed = await (await client.get("/v1/files", params={"purpose": "fine-tune"})).json()
    assert [f["id"] for f in listed["data"]] == [stored["id"]]
    assert (await (await client.get("/v1/files", params={"purpose": "batch"})).json())["data"] == []
    assert (await (await client.get(f"/v1/files/{stored['id']}")).json())["bytes"] == 9
    assert await (await client.get(f"/v1/files/{stored['id']}/content")).read() == b'{"a": 1}\n'
    deleted = await client.delete(f"/v1/files/{stored['id']}")
    assert (await deleted.json())["deleted"] is True
    assert (await client.get(f"/v1/files/{stored['id']}")).status == 404
    assert sim.stats()["files"] == {"files": 0, "bytes": 0, "uploaded": 1, "deleted": 1}


async def test_files_refuse_a_bad_purpose_and_what_is_over_the_limits(
    client: Client, sim: SimulatedLM
) -> None:
    response = await _upload(client, b"x", purpose="batch_output")
    assert response.status == 400 and "purpose" in (await response.json())["error"]["message"]
    sim.configure(file_max_bytes=100, files_max_bytes=150)
    assert (await _upload(client, b"x" * 101)).status == 413
    assert (await _upload(client, b"x" * 100)).status == 200
    over_total = await _upload(client, b"x" * 60)
    assert over_total.status == 413 and "delete files" in (await over_total.json())["error"]["message"]
    assert sim.files.total_bytes == 100


async def test_a_batch_answers_each_request_as_the_online_endpoint_does(
    client: Client, sim: SimulatedLM
) -> None:
    bodies = [_chat(f"What is {i} + {i * 3}?", seed=i) for i in range(30)]
    created = await _run_batch(client, _jsonl(bodies), metadata={"dspex_key": "k1"})
    assert created["status"] == "validating" and created["metadata"] == {"dspex_key": "k1"}
    batch = await _wait_done(client, created["id"])
    assert batch["status"] == "completed" and batch["error_file_id"] is None
    assert batch["request_counts"] == {"total": 30, "completed": 30, "failed": 0}
    assert batch["in_progress_at"] is not None and batch["completed_at"] is not None
    output = await _lines(client, batch["output_file_id"])
    assert sorted(output) == sorted(f"r{i}" for i in range(30))
    for i, body in enumerate(bodies):
        online = await (await client.post("/v1/chat/completions", json=body)).json()
        answer = output[f"r{i}"]["response"]
        assert answer["status_code"] == 200 and output[f"r{i}"]["error"] is None
        assert answer["body"]["choices"] == online["choices"] and answer["body"]["usage"] == online["usage"]
    stats = sim.stats()
    assert stats["batch"]["created"] == 1 and stats["batch"]["requests_ok"] == 30
    assert stats["by_path"]["chat"] == 30 and stats["batch"].get("repeated", 0) == 0


async def test_repeated_requests_are_counted_and_failures_go_to_the_error_file(
    client: Client, sim: SimulatedLM
) -> None:
    bodies = [_chat(f"What is {i} * 2?") for i in range(40)]
    await _wait_done(client, (await _run_batch(client, _jsonl(bodies[:10])))["id"])
    sim.configure(batch_fail=0.5, models=("simulated",))
    mixed = [*bodies, {**bodies[0], "model": "unknown-model"}]
    batch = await _wait_done(client, (await _run_batch(client, _jsonl(mixed)))["id"])
    assert batch["status"] == "completed"
    output, errors = (
        await _lines(client, batch["output_file_id"]),
        await _lines(client, batch["error_file_id"]),
    )
    assert len(output) + len(errors) == 41 and set(output).isdisjoint(errors)
    assert batch["request_counts"] == {"total": 41, "completed": len(output), "failed": len(errors)}
    assert 5 <= len(errors) <= 36  # about half of 40 drawn to fail, and the unknown model
    assert errors["r40"]["response"]["status_code"] == 404
    assert {e["response"]["status_code"] for k, e in errors.items() if k != "r40"} == {500}
    repeated = sum(1 for k in output if int(k[1:]) < 10)
    assert sim.stats()["batch"].get("repeated", 0) == repeated


async def test_list_pages_newest_first_and_finds_a_batch_by_metadata(client: Client) -> None:
    data = _jsonl([_chat("What is 1 + 1?")])
    ids = [(await _run_batch(client, data, metadata={"n": str(i)}))["id"] for i in range(5)]
    first = await (await client.get("/v1/batches", params={"limit": 2})).json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    rest = await (await client.get("/v1/batches", params={"limit": 10, "after": first["last_id"]})).json()
    assert [b["id"] for b in rest["data"]] == ids[::-1][2:] and rest["has_more"] is False
    assert [b["metadata"]["n"] for b in rest["data"]] == ["2", "1", "0"]
    assert (await client.get("/v1/batches", params={"limit": 0})).status == 400


async def test_a_batch_over_the_limits_or_malformed_fails_validation(
    client: Client, sim: SimulatedLM
) -> None:
    sim.configure(batch_max_requests=3)
    too_many = await _wait_done(client, (await _run_batch(client, _jsonl([_chat("q")] * 4)))["id"])
    assert too_many["status"] == "failed" and too_many["errors"]["data"][0]["code"] == "too_many_requests"
    sim.configure(batch_max_requests=50_000, batch_max_bytes=50)
    too_big = await _wait_done(client, (await _run_batch(client, _jsonl([_chat("q")])))["id"])
    assert too_big["errors"]["data"][0]["code"] == "file_too_large"
    sim.configure(batch_max_bytes=10**6)
    broken = await _wait_done(client, (await _run_batch(client, _jsonl([_chat("q")]) + b"{not json\n"))["id"])
    assert broken["status"] == "failed" and broken["errors"]["data"][0]["line"] == 2
    duplicate = _jsonl([_chat("q")]) * 2
    twice = await _wait_done(client, (await _run_batch(client, duplicate))["id"])
    assert twice["errors"]["data"][0]["code"] == "duplicate_custom_id"
    unknown = await client.post(
        "/v1/batches", json={"input_file_id": "file-none", "endpoint": "/v1/chat/completions"}
    )
    assert unknown.status == 404
    upload = await (await _upload(client, _jsonl([_chat("q")]))).json()
    embeddings = {"input_file_id": upload["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
    assert (await client.post("/v1/batches", json=embeddings)).status == 400


async def test_an_expired_batch_answers_part_and_reports_the_rest(client: Client, sim: SimulatedLM) -> None:
    sim.configure(batch_delay=0.4, batch_expire_after=0.1)
    batch = await _wait_done(
        client, (await _run_batch(client, _jsonl([_chat(f"q{i}") for i in range(20)])))["id"]
    )
    assert batch["status"] == "expired" and batch["expired_at"] is not None
    output, errors = (
        await _lines(client, batch["output_file_id"]),
        await _lines(client, batch["error_file_id"]),
    )
    assert len(output) == 5 and len(errors) == 15  # a quarter of the time, a quarter of the requests
    assert {e["error"]["code"] for e in errors.values()} == {"batch_expired"}
    assert sim.stats()["batch"]["requests_expired"] == 15


async def test_a_held_batch_stays_in_progress_until_the_hold_is_off(client: Client, sim: SimulatedLM) -> None:
    sim.configure(batch_hold=True)
    created = await _run_batch(client, _jsonl([_chat(f"q{i}") for i in range(3)]))
    await asyncio.sleep(0.3)
    held = await (await client.get(f"/v1/batches/{created['id']}")).json()
    assert held["status"] == "in_progress"
    sim.configure(batch_hold=False)
    batch = await _wait_done(client, created["id"])
    assert batch["status"] == "completed" and sim.stats()["batch"]["requests_ok"] == 3


async def test_a_cancelled_batch_stops_and_cannot_be_cancelled_again(
    client: Client, sim: SimulatedLM
) -> None:
    sim.configure(batch_delay=30.0)
    created = await _run_batch(client, _jsonl([_chat(f"q{i}") for i in range(4)]))
    await asyncio.sleep(0.05)
    cancelling = await (await client.post(f"/v1/batches/{created['id']}/cancel")).json()
    assert cancelling["status"] == "cancelling"
    batch = await _wait_done(client, created["id"])
    assert batch["status"] == "cancelled" and batch["output_file_id"] is None
    errors = await _lines(client, batch["error_file_id"])
    assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"} and len(errors) == 4
    assert (await client.post(f"/v1/batches/{created['id']}/cancel")).status == 400


async def test_files_and_batches_need_the_key_when_one_is_required(client: Client, sim: SimulatedLM) -> None:
    sim.configure(require_api_key="sk-sim")
    assert (await _upload(client, b"x")).status == 401
    assert (await client.get("/v1/batches")).status == 401
    ok = await client.get("/v1/batches", headers={"Authorization": "Bearer sk-sim"})
    assert ok.status == 200


_ROUTES = [
    ("POST", "/v1/files", "files"), ("GET", "/v1/files", "files"), ("GET", "/v1/files/f-1", "files"),
    ("GET", "/v1/files/f-1/content", "files"), ("DELETE", "/v1/files/f-1", "files"),
    ("POST", "/v1/batches", "batches"), ("GET", "/v1/batches", "batches"),
    ("GET", "/v1/batches/b-1", "batches"), ("POST", "/v1/batches/b-1/cancel", "batches"),
    ("POST", "/v1/fine_tuning/jobs", "fine_tuning"), ("GET", "/v1/fine_tuning/jobs", "fine_tuning"),
    ("GET", "/v1/fine_tuning/jobs/j-1", "fine_tuning"),
    ("GET", "/v1/fine_tuning/jobs/j-1/events", "fine_tuning"),
    ("POST", "/v1/fine_tuning/jobs/j-1/cancel", "fine_tuning"),
]  # fmt: skip


async def test_every_files_batches_and_fine_tuning_route_is_counted_and_gated(
    client: Client, sim: SimulatedLM
) -> None:
    sim.down()
    for method, path, _ in _ROUTES:
        assert (await client.request(method, path)).status == 503, path
    sim.up()
    expected = Counter(counted for *_, counted in _ROUTES)  # files 5, batches 4, fine_tuning 5
    assert {name: sim.by_path[name] for name in expected} == expected


async def test_an_unknown_id_is_a_404_naming_the_object(client: Client) -> None:
    for path, named in [
        ("/v1/files/f-1/content", "No such File object: f-1"),
        ("/v1/batches/b-1/cancel", "No such Batch object: b-1"),
        ("/v1/fine_tuning/jobs/j-1/events", "No such fine-tuning job: j-1"),
    ]:
        method = "POST" if path.endswith("cancel") else "GET"
        response = await client.request(method, path)
        assert response.status == 404 and named in (await response.json())["error"]["message"], path
    deleted = await client.delete("/v1/files/f-1")
    assert deleted.status == 404
