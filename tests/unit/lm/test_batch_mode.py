"""Batch mode in one process: calls answered from stored answers, parked without one, batch-priced."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.errors import ConfigurationError, LMNotFoundError, LMServerError
from dspex.lm import LM, track_usage
from dspex.lm.batch_mode import ParkRequest, batch_replay, request_hash
from dspex.lm.pricing import DEFAULT_PRICES, ModelPrice, PriceTable

MODEL = "openai/batch-mode-unit-model"  # a name of this test's own, priced below
DEFAULT_PRICES.register({MODEL: (2.0, 8.0)})
MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


def _lm(model: str = MODEL) -> LM:
    return LM(model, api_base="http://127.0.0.1:9/v1", cache=False)  # nothing listens: no call may go out


def _completion(text: str) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500},
    }


async def _body(lm: LM) -> dict[str, Any]:
    """The body the LM sends for MESSAGES, as its parked call carries it."""
    with batch_replay({}), pytest.raises(ParkRequest) as parked:
        await lm.acomplete(MESSAGES)
    return parked.value.call.body


async def test_a_missing_answer_parks_the_call_with_its_request() -> None:
    lm = _lm()
    with batch_replay({}), pytest.raises(ParkRequest) as parked:
        await lm.acomplete(MESSAGES)
    call = parked.value.call
    assert call.body["messages"] == MESSAGES and call.body["model"] == "batch-mode-unit-model"
    assert call.model == MODEL and call.api_base == lm.api_base
    assert call.request_hash == request_hash(lm.api_base, call.body)
    assert not isinstance(parked.value, Exception)  # adapters' `except Exception` must not catch it


async def test_a_stored_answer_is_returned_at_the_batch_price() -> None:
    lm = _lm()
    answers = {request_hash(lm.api_base, await _body(lm)): {"status": 200, "body": _completion("5")}}
    with batch_replay(answers) as replay, track_usage() as tracker:
        response = await lm.acomplete(MESSAGES)
    assert response.text == "5" and replay.used == 1
    online = (1000 * 2.0 + 500 * 8.0) / 1e6
    assert response.usage.cost_usd == pytest.approx(online / 2)
    assert tracker.usage.lm_calls == 1 and tracker.usage.prompt_tokens == 1000


async def test_a_stored_error_fails_the_call_with_the_providers_text() -> None:
    lm = _lm()
    digest = request_hash(lm.api_base, await _body(lm))
    refused = {digest: {"status": 404, "error": "model gone (provider)"}}
    with batch_replay(refused), pytest.raises(LMNotFoundError, match="model gone"):
        await lm.acomplete(MESSAGES)
    expired = {digest: {"status": None, "error": "batch_expired: too slow"}}
    with batch_replay(expired), pytest.raises(LMServerError, match="batch_expired"):
        await lm.acomplete(MESSAGES)


async def test_a_provider_without_a_batch_api_is_refused_before_parking() -> None:
    lm = LM("together/llama", api_base="http://127.0.0.1:9/v1", cache=False)
    with batch_replay({}), pytest.raises(ConfigurationError, match="no batch API"):
        await lm.acomplete(MESSAGES)


def test_batch_prices_are_a_share_of_the_online_ones() -> None:
    table = PriceTable({"m": (1.0, 3.0), "cheap": ModelPrice(1.0, 3.0, 0.25)})
    assert table.cost_of("m", 10**6, 10**6, batch=True) == pytest.approx(2.0)
    assert table.cost_of("cheap", 10**6, 10**6, batch=True) == pytest.approx(1.0)
    with pytest.raises(ConfigurationError, match=r"within 0\.\.1"):
        PriceTable({"bad": (1.0, 1.0, 1.5)})


async def test_an_answer_given_for_another_task_counts_as_a_cache_hit() -> None:
    lm = _lm()
    digest = request_hash(lm.api_base, await _body(lm))
    answers = {digest: {"status": 200, "body": _completion("5"), "cached": True}}
    with batch_replay(answers), track_usage() as tracker:
        response = await lm.acomplete(MESSAGES)
    assert response.text == "5" and response.usage.cost_usd == 0.0
    assert (tracker.usage.lm_calls, tracker.usage.cache_hits, tracker.usage.prompt_tokens) == (1, 1, 0)


async def test_an_answer_the_online_endpoint_gave_is_priced_online() -> None:
    lm = _lm()
    digest = request_hash(lm.api_base, await _body(lm))
    with batch_replay({digest: {"status": 200, "body": _completion("5"), "online": True}}):
        response = await lm.acomplete(MESSAGES)
    assert response.usage.cost_usd == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
