"""The simulated LM's knobs over real HTTP: rate limits, failures, auth, unknown models, hangs,
hold/release, outages and stopping/starting on the same port."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from dspex.testing import SimulatedLMServer

BODY = {"model": "simulated", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


async def _fire(url: str, n: int, *, timeout: float = 30.0, **kwargs: object) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await asyncio.gather(
            *(client.post(f"{url}/chat/completions", json=BODY, **kwargs) for _ in range(n))
        )  # type: ignore[arg-type]


def _codes(responses: list[httpx.Response]) -> dict[str, int]:
    codes: dict[str, int] = {}
    for response in responses:
        codes[str(response.status_code)] = codes.get(str(response.status_code), 0) + 1
    return codes


async def test_beyond_the_rate_answers_429_with_retry_after(sim: SimulatedLMServer) -> None:
    sim.control.configure(rate=0.5, burst=2)  # two at once, then one every two seconds
    responses = await _fire(sim.base_url, 12)
    codes = _codes(responses)
    assert codes.get("429", 0) >= 9 and codes.get("200", 0) >= 2
    limited = next(r for r in responses if r.status_code == 429)
    wait_ms = int(limited.headers["retry-after-ms"])
    assert 0 < wait_ms <= 2000 and int(limited.headers["Retry-After"]) == -(-wait_ms // 1000)
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert sim.control.stats()["by_status"] == codes


def test_fail_fraction_answers_500s(sim: SimulatedLMServer) -> None:
    sim.control.configure(fail=0.3, seed=7)
    with httpx.Client() as client:
        codes = _codes([client.post(f"{sim.base_url}/chat/completions", json=BODY) for _ in range(400)])
    assert 0.22 <= codes["500"] / 400 <= 0.38
    stats = sim.control.stats()
    assert stats["by_status"] == codes and stats["completions_ok"] == codes["200"]


def test_required_api_key_answers_401_without_echoing_the_key(sim: SimulatedLMServer) -> None:
    sim.control.configure(require_api_key="sk-sim-secret")
    url = f"{sim.base_url}/chat/completions"
    missing = httpx.post(url, json=BODY)
    wrong = httpx.post(url, json=BODY, headers={"Authorization": "Bearer sk-wrong"})
    right = httpx.post(url, json=BODY, headers={"Authorization": "Bearer sk-sim-secret"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    for response in (missing, wrong):
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert "sk-wrong" not in response.text and "sk-sim-secret" not in response.text
    assert "sk-sim-secret" not in str(sim.control.stats())


def test_unknown_model_answers_404_model_not_found(sim: SimulatedLMServer) -> None:
    sim.control.configure(models=["simulated"])
    ok = httpx.post(f"{sim.base_url}/chat/completions", json=BODY)
    unknown = httpx.post(f"{sim.base_url}/chat/completions", json={**BODY, "model": "gpt-unknown"})
    assert ok.status_code == 200 and unknown.status_code == 404
    assert (
        unknown.json()["error"]["code"] == "model_not_found"
        and "gpt-unknown" in unknown.json()["error"]["message"]
    )


async def test_hold_keeps_requests_pending_until_release(sim: SimulatedLMServer) -> None:
    control = sim.async_control()
    try:
        await control.hold()
        pending = asyncio.ensure_future(_fire(sim.base_url, 3))
        stats = await control.wait_until(lambda s: s["held"] == 3, timeout=10)
        assert not pending.done() and stats["in_flight"] == 3 and stats["completions_ok"] == 0
        await control.release()
        responses = await asyncio.wait_for(pending, 10)
        assert _codes(responses) == {"200": 3}
        stats = await control.stats()
        assert (stats["held"], stats["held_total"], stats["in_flight"], stats["max_in_flight"]) == (
            0,
            3,
            0,
            3,
        )
    finally:
        await control.aclose()


async def test_hold_after_lets_that_many_through_first(sim: SimulatedLMServer) -> None:
    control = sim.async_control()
    try:
        await control.hold(after=2)
        pending = asyncio.ensure_future(_fire(sim.base_url, 5))
        stats = await control.wait_until(lambda s: s["held"] == 3 and s["completions_ok"] == 2, timeout=10)
        assert stats["holding"] and not pending.done()
        await control.release()
        assert _codes(await asyncio.wait_for(pending, 10)) == {"200": 5}
    finally:
        await control.aclose()


async def test_in_flight_counts_concurrent_requests(sim: SimulatedLMServer) -> None:
    sim.control.configure(latency=0.3)
    assert _codes(await _fire(sim.base_url, 10)) == {"200": 10}
    stats = sim.control.stats()
    assert stats["max_in_flight"] == 10 and stats["in_flight"] == 0


async def test_a_hanging_request_ends_when_the_client_gives_up(sim: SimulatedLMServer) -> None:
    sim.control.configure(timeout_rate=1.0, hang_seconds=300)
    with pytest.raises(httpx.ReadTimeout):
        await _fire(sim.base_url, 1, timeout=0.5)
    stats = sim.control.wait_until(lambda s: s["in_flight"] == 0, timeout=10)
    assert stats["by_status"] == {"499": 1} and stats["completions_ok"] == 0


def test_down_and_up_and_down_after(sim: SimulatedLMServer) -> None:
    url = f"{sim.base_url}/chat/completions"
    sim.control.down()
    assert httpx.post(url, json=BODY).status_code == 503
    sim.control.down(mode="drop")
    with pytest.raises(httpx.TransportError):
        httpx.post(url, json=BODY)
    sim.control.up()
    assert httpx.post(url, json=BODY).status_code == 200
    sim.control.configure(down_after=2)
    assert [httpx.post(url, json=BODY).status_code for _ in range(4)] == [200, 200, 503, 503]
    assert sim.control.stats()["down"] == "503"


def test_stop_and_start_on_the_same_port() -> None:
    with SimulatedLMServer(latency=0.0) as server:
        port, url = server.port, f"{server.base_url}/chat/completions"
        assert httpx.post(url, json=BODY).status_code == 200
        server.stop()
        assert not server.running
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, json=BODY)
        server.start()
        assert server.port == port and httpx.post(url, json=BODY).status_code == 200
        server.kill()
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, json=BODY)
        server.restart()
        assert server.port == port and server.control.stats()["completions_ok"] == 0


def test_in_process_server_serves_the_same_answers(sim: SimulatedLMServer) -> None:
    with SimulatedLMServer(in_process=True) as local:
        answer = httpx.post(f"{local.base_url}/chat/completions", json={**BODY, "seed": 3}).json()
        local.stop()
        local.start()
        assert local.control.stats()["requests_total"] == 0
    reference = httpx.post(f"{sim.base_url}/chat/completions", json={**BODY, "seed": 3}).json()
    assert answer["choices"] == reference["choices"]


def test_latency_is_applied(sim: SimulatedLMServer) -> None:
    sim.control.configure(latency=0.2, jitter=0.05)
    start = time.perf_counter()
    assert httpx.post(f"{sim.base_url}/chat/completions", json=BODY).status_code == 200
    # the lower bound is the latency; the upper one only rules out a wrong unit, loose for a loaded machine
    assert 0.14 <= time.perf_counter() - start < 10.0
