"""The LM client against a real HTTP server: retries, errors, cache, usage and the key."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from lm_scripted_server import Reply, ScriptedServer

from dspex.errors import (
    LMAuthenticationError,
    LMConnectionError,
    LMNotFoundError,
    LMRateLimitError,
    LMRequestError,
    LMServerError,
    LMTimeoutError,
)
from dspex.lm import LM, RetryPolicy, track_usage
from dspex.lm.cache import cache_for
from dspex.lm.transport import get_client

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]
KEY = "sk-test-9f8e7d6c5b4a39281706"


def rate_limited(retry_after: str = "0") -> Reply:
    return Reply(429, {"Retry-After": retry_after}, {"error": {"message": "slow down"}})


async def test_a_429_storm_does_not_use_up_retries(server: ScriptedServer, make_lm: Any) -> None:
    server.script = [rate_limited() for _ in range(5)]
    response = await make_lm(max_retries=1, cache=False).acomplete(MESSAGES)
    assert response.text == "ok"
    assert server.count == 6


async def test_retry_after_is_honoured(server: ScriptedServer, make_lm: Any) -> None:
    server.script = [rate_limited("0.3")]
    response = await make_lm(cache=False).acomplete(MESSAGES)
    assert server.count == 2
    assert response.latency_s >= 0.3


async def test_429s_past_the_wait_budget_raise_rate_limit_error(server: ScriptedServer, make_lm: Any) -> None:
    server.script = [rate_limited("0.2") for _ in range(10)]
    policy = RetryPolicy(base_delay=0.01, rate_limit_budget_s=0.5)
    with pytest.raises(LMRateLimitError, match="budget") as caught:
        await make_lm(cache=False, retry_policy=policy).acomplete(MESSAGES)
    assert caught.value.status == 429
    assert server.count == 3  # waited 0.2 + 0.2; a third wait would pass 0.5


async def test_500s_are_retried_up_to_max_retries(server: ScriptedServer, make_lm: Any) -> None:
    server.script = [Reply(500, json={"error": {"message": "boom"}}) for _ in range(10)]
    with pytest.raises(LMServerError, match="boom") as caught:
        await make_lm(max_retries=2, cache=False).acomplete(MESSAGES)
    assert caught.value.status == 500
    assert server.count == 3


async def test_a_500_then_success_recovers(server: ScriptedServer, make_lm: Any) -> None:
    server.script = [Reply(503), Reply(502)]
    response = await make_lm(max_retries=2, cache=False).acomplete(MESSAGES)
    assert response.text == "ok"
    assert server.count == 3


@pytest.mark.parametrize(
    ("status", "error"), [(401, LMAuthenticationError), (404, LMNotFoundError), (400, LMRequestError)]
)
async def test_other_4xx_raise_at_once_with_the_providers_message(
    server: ScriptedServer, make_lm: Any, status: int, error: type[Exception]
) -> None:
    server.script = [Reply(status, json={"error": {"message": f"provider says {status}"}})]
    with pytest.raises(error, match=f"provider says {status}") as caught:
        await make_lm(max_retries=5).acomplete(MESSAGES)
    assert getattr(caught.value, "status", None) == status
    assert server.count == 1


async def test_timeouts_are_retried_then_raise(server: ScriptedServer, make_lm: Any) -> None:
    server.script = [Reply(hang=True) for _ in range(3)]
    with pytest.raises(LMTimeoutError):
        await make_lm(max_retries=1, timeout=0.2, cache=False).acomplete(MESSAGES)
    assert server.count == 2


async def test_a_cache_hit_sends_nothing_from_memory_or_disk(
    server: ScriptedServer, make_lm: Any, tmp_path: Path
) -> None:
    lm = make_lm()
    first = await lm.acomplete(MESSAGES)
    again = await lm.acomplete(MESSAGES)
    cache_for(tmp_path / "cache").flush()
    cache_for(tmp_path / "cache").clear_memory()
    from_disk = await make_lm().acomplete(MESSAGES)
    assert server.count == 1
    assert (first.cached, again.cached, from_disk.cached) == (False, True, True)
    assert from_disk.text == first.text
    assert from_disk.usage.cache_hits == 1 and from_disk.usage.total_tokens == 0


async def test_rollout_ids_are_seeds_and_miss_the_cache(server: ScriptedServer, make_lm: Any) -> None:
    lm = make_lm(temperature=0.7)
    await lm.acomplete(MESSAGES, rollout_id=1)
    await lm.acomplete(MESSAGES, rollout_id=2)
    await lm.acomplete(MESSAGES, rollout_id=1)
    assert [seen.body.get("seed") for seen in server.seen] == [1, 2]
    assert server.seen[0].body["temperature"] == 0.7


async def test_errors_are_never_cached(server: ScriptedServer, make_lm: Any) -> None:
    server.script = [Reply(400, json={"error": {"message": "bad"}})]
    lm = make_lm()
    with pytest.raises(LMRequestError):
        await lm.acomplete(MESSAGES)
    response = await lm.acomplete(MESSAGES)
    assert not response.cached
    assert server.count == 2


async def test_usage_is_the_servers_reported_usage_summed(server: ScriptedServer, make_lm: Any) -> None:
    lm = make_lm(cache=False)
    prompts = [[{"role": "user", "content": "q" * i}] for i in range(1, 41)]
    with track_usage() as run:
        responses = await asyncio.gather(*(lm.acomplete(p) for p in prompts))
    assert run.usage.prompt_tokens == server.reported_prompt_tokens
    assert run.usage.completion_tokens == server.reported_completion_tokens
    assert run.usage.lm_calls == 40 == server.count
    assert sum(r.usage.total_tokens for r in responses) == run.usage.total_tokens


async def test_embeddings_come_back_in_input_order(server: ScriptedServer, make_lm: Any) -> None:
    vectors = await make_lm().aembed(["a", "bbb", "cc"], model="sim/embed")
    assert vectors == [[1.0, 0.0], [3.0, 1.0], [2.0, 2.0]]
    assert server.seen[0].path == "/v1/embeddings" and server.seen[0].body["model"] == "embed"


async def test_the_key_is_sent_but_never_logged_or_raised(
    server: ScriptedServer, make_lm: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DSPEX_TEST_LM_KEY", KEY)
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
    server.script = [Reply(500), Reply(401, json=echo)]
    lm = make_lm(api_key_env="DSPEX_TEST_LM_KEY")
    with pytest.raises(LMAuthenticationError) as caught:
        await lm.acomplete(MESSAGES)
    await lm.acomplete(MESSAGES)
    assert [seen.headers["Authorization"] for seen in server.seen] == [f"Bearer {KEY}"] * 3
    assert "Incorrect API key provided" in str(caught.value)
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    assert KEY not in caplog.text
    assert caplog.records  # the retry was logged, so the check above looked at something


async def test_an_explicit_key_wins_and_no_key_sends_no_header(server: ScriptedServer, make_lm: Any) -> None:
    await make_lm(api_key=KEY, cache=False).acomplete(MESSAGES)
    await make_lm(api_key_env="DSPEX_TEST_UNSET_VARIABLE", cache=False).acomplete(MESSAGES)
    assert server.seen[0].headers["Authorization"] == f"Bearer {KEY}"
    assert "Authorization" not in server.seen[1].headers


async def test_the_cache_file_holds_no_key(server: ScriptedServer, make_lm: Any, tmp_path: Path) -> None:
    await make_lm(api_key=KEY).acomplete(MESSAGES)
    cache_for(tmp_path / "cache").flush()
    files = [path for path in (tmp_path / "cache").rglob("*") if path.is_file()]
    assert files
    for path in files:
        assert KEY.encode() not in path.read_bytes()


def test_the_sync_wrapper_calls_over_http(threaded_server: ScriptedServer, tmp_path: Path) -> None:
    lm = LM("sim/scripted", api_base=threaded_server.base_url, cache_dir=tmp_path)
    with track_usage() as run:
        response = lm.complete(MESSAGES)
    assert response.text == "ok"
    assert threaded_server.count == 1
    assert run.usage.lm_calls == 1 and run.usage.prompt_tokens == threaded_server.reported_prompt_tokens


async def test_an_unreachable_endpoint_is_a_connection_error_after_retries(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = RetryPolicy(base_delay=0.01, max_delay=0.02)
    lm = LM("sim/none", api_base=f"http://127.0.0.1:{port}/v1", cache_dir=tmp_path, retry_policy=policy)
    with pytest.raises(LMConnectionError, match=f"127.0.0.1:{port}") as caught:
        await lm.acomplete(MESSAGES)
    assert caught.value.transient and not caught.value.systemic


async def test_aclose_flushes_and_the_next_call_opens_a_new_client(
    server: ScriptedServer, make_lm: Any
) -> None:
    lm = make_lm()
    first = await get_client()
    await lm.acomplete(MESSAGES)
    await lm.aclose()
    assert first.is_closed
    response = await lm.copy(temperature=0.5).acomplete(MESSAGES)
    assert response.text == "ok" and not (await get_client()).is_closed
    assert server.count == 2


async def test_the_sync_wrapper_works_inside_a_running_loop(
    threaded_server: ScriptedServer, tmp_path: Path
) -> None:
    # as in a notebook cell: the call runs on dspex's bridge loop while this loop waits for it
    lm = LM("sim/scripted", api_base=threaded_server.base_url, cache_dir=tmp_path)
    with track_usage() as run:
        response = lm.complete(MESSAGES)
    assert response.text == "ok" and threaded_server.count == 1
    assert run.usage.lm_calls == 1
