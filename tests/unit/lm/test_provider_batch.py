"""The provider Batch API client against the simulated LM's /v1/files and /v1/batches (a real server)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lm_served import served_v1

from dspex.errors import ConfigurationError, LMAuthenticationError
from dspex.lm import LM
from dspex.lm.provider_batch import BatchLimits, BatchRequest, ProviderBatchClient, _parse_result, batch_key
from dspex.testing._server import SimulatedLM, make_app


def _body(i: int) -> dict[str, Any]:
    question = f"[[ ## question ## ]]\nWhat is {i} + {2 * i}?"
    return {"model": "simulated", "messages": [{"role": "user", "content": question}]}


def _requests(n: int) -> list[BatchRequest]:
    return [BatchRequest(custom_id=f"q{i}", body=_body(i)) for i in range(n)]


@pytest.fixture
async def sim() -> SimulatedLM:
    return SimulatedLM()


@pytest.fixture
async def base(sim: SimulatedLM) -> AsyncIterator[str]:
    async with served_v1(make_app(sim)) as url:
        yield url


async def test_a_batch_round_trip_gives_the_online_answers(base: str, sim: SimulatedLM) -> None:
    client = ProviderBatchClient(base)
    requests = _requests(12)
    batch = await client.submit(requests)
    assert batch["metadata"] == {"dspex_batch_key": batch_key(requests)}
    done = await client.wait(batch["id"], poll_s=0.01, timeout=10)
    results = await client.results(done)
    assert sorted(results) == sorted(r.custom_id for r in requests) and all(r.ok for r in results.values())
    lm = LM("openai/simulated", api_base=base, cache=False)
    for request in requests[:3]:
        online = await lm.acomplete(request.body["messages"])
        assert results[request.custom_id].body is not None
        assert results[request.custom_id].body["choices"][0]["message"]["content"] == online.text
    assert sim.stats()["batch"]["requests_ok"] == 12


async def test_submitting_again_finds_the_batch_instead_of_creating_one(base: str, sim: SimulatedLM) -> None:
    client = ProviderBatchClient(base)
    requests = _requests(5)
    first = await client.submit(requests)
    for _ in range(3):  # another batch in between: find() must look past it
        await client.submit(_requests(1))
    again = await client.submit(list(reversed(requests)))  # same requests, any order: same key
    assert again["id"] == first["id"]
    assert sim.stats()["batch"]["created"] == 2 and sim.stats()["files"]["uploaded"] == 2


async def test_failed_requests_come_back_with_the_providers_error(base: str, sim: SimulatedLM) -> None:
    sim.configure(models=("simulated",))
    client = ProviderBatchClient(base)
    bad = BatchRequest("bad", {**_body(1), "model": "no-such-model"})
    done = await client.wait((await client.submit([*_requests(2), bad]))["id"], poll_s=0.01, timeout=10)
    results = await client.results(done)
    assert results["q0"].ok and results["q1"].ok
    assert results["bad"].status == 404 and "no-such-model" in (results["bad"].error or "")
    assert not results["bad"].retryable


async def test_expired_requests_are_retryable(base: str, sim: SimulatedLM) -> None:
    sim.configure(batch_delay=0.2, batch_expire_after=0.1)
    client = ProviderBatchClient(base)
    done = await client.wait((await client.submit(_requests(10)))["id"], poll_s=0.01, timeout=10)
    results = await client.results(done)
    assert done["status"] == "expired" and len(results) == 10
    missing = [r for r in results.values() if not r.ok]
    assert len(missing) == 5 and all(r.retryable and "batch_expired" in (r.error or "") for r in missing)


def test_split_honours_the_request_and_byte_limits() -> None:
    requests = _requests(10)
    by_count = ProviderBatchClient("http://x/v1", limits=BatchLimits(max_requests=4)).split(requests)
    assert [len(part) for part in by_count] == [4, 4, 2]
    line = len(requests[0].line())
    by_bytes = ProviderBatchClient("http://x/v1", limits=BatchLimits(max_bytes=3 * line + 2)).split(requests)
    assert all(sum(len(r.line()) for r in part) <= 3 * line + 2 for part in by_bytes)
    assert [r for part in by_bytes for r in part] == requests
    tiny = ProviderBatchClient("http://x/v1", limits=BatchLimits(max_bytes=10))
    with pytest.raises(ConfigurationError, match="at most 10"):
        tiny.split(requests)


def test_a_provider_without_a_batch_api_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no batch API"):
        ProviderBatchClient.for_lm(LM("together/llama", api_base="http://127.0.0.1:1/v1"))
    assert ProviderBatchClient.for_lm(LM("openai/gpt-4o-mini")).api_base == "https://api.openai.com/v1"


async def test_a_wrong_key_fails_without_showing_it(base: str, sim: SimulatedLM) -> None:
    sim.configure(require_api_key="sk-right")
    client = ProviderBatchClient(base, api_key="sk-wrong-secret")
    with pytest.raises(LMAuthenticationError) as caught:
        await client.submit(_requests(1))
    assert "sk-wrong-secret" not in str(caught.value)
    ok = ProviderBatchClient(base, api_key="sk-right")
    assert (await ok.submit(_requests(1)))["status"] == "validating"


async def test_an_online_retry_answers_as_the_chat_endpoint(base: str, sim: SimulatedLM) -> None:
    client = ProviderBatchClient(base)
    online = await client.complete_online(_body(3))
    lm = LM("openai/simulated", api_base=base, cache=False)
    assert online["choices"][0]["message"]["content"] == (await lm.acomplete(_body(3)["messages"])).text
    assert sim.stats()["by_path"]["chat"] == 2


def test_a_malformed_result_line_fails_only_its_request_and_keeps_the_providers_text() -> None:
    answered = {"custom_id": "ok", "response": {"status_code": 200, "body": {"choices": [{"index": 0}]}}}
    no_choices = {"custom_id": "empty", "response": {"status_code": 200, "body": {"id": "x"}}}
    refused = {
        "custom_id": "refused",
        "response": {"status_code": 400, "body": {"error": {"message": "max_tokens is too large"}}},
    }
    expired = {"custom_id": "late", "error": {"code": "batch_expired", "message": "not done in time"}}
    results = [_parse_result(json.dumps(line).encode()) for line in (answered, no_choices, refused, expired)]
    assert [r.custom_id for r in results if r is not None] == ["ok", "empty", "refused", "late"]
    ok, empty, bad, late = results
    assert ok is not None and ok.ok and ok.body is not None
    assert empty is not None and not empty.ok and "without a chat completion" in str(empty.error)
    assert bad is not None and bad.status == 400 and bad.error == "max_tokens is too large"
    assert late is not None and late.error == "batch_expired: not done in time"
    assert _parse_result(b"{not json") is None and _parse_result(b'{"response": {}}') is None  # no id
