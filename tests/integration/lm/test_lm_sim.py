"""The LM client against the project's simulated LM under rate limits and faults."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dspex.lm import LM, AdaptiveLimiter, RetryPolicy, track_usage
from dspex.testing import SimulatedLMServer

CALLS = 300


@pytest.fixture
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(in_process=True, latency=0.02, rate=200, burst=20, fail=0.1, seed=3) as server:
        yield server


def prompts() -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(CALLS)]


@pytest.mark.slow
async def test_a_storm_of_429s_and_500s_loses_nothing(sim: SimulatedLMServer, tmp_path: Path) -> None:
    policy = RetryPolicy(base_delay=0.02)
    lm = LM("sim/simulated", api_base=sim.base_url, cache_dir=tmp_path, retry_policy=policy)
    with track_usage() as run:
        responses = await asyncio.gather(*(lm.acomplete(p) for p in prompts()))
    stats = sim.control.stats()
    assert len(responses) == CALLS and all(r.text for r in responses)
    assert stats["completions_ok"] == CALLS
    assert stats["by_status"].get("429", 0) > 0 and stats["by_status"].get("500", 0) > 0
    assert (run.usage.prompt_tokens, run.usage.completion_tokens) == (
        stats["prompt_tokens"],
        stats["completion_tokens"],
    )


@pytest.mark.slow
async def test_the_adaptive_limiter_caps_what_is_in_flight(sim: SimulatedLMServer, tmp_path: Path) -> None:
    limiter = AdaptiveLimiter(initial=24, maximum=24, cooldown_s=0.2)
    lm = LM("sim/simulated", api_base=sim.base_url, cache=False, limiter=limiter)
    responses = await asyncio.gather(*(lm.acomplete(p) for p in prompts()))
    stats = sim.control.stats()
    assert len(responses) == CALLS and stats["completions_ok"] == CALLS
    assert stats["max_in_flight"] <= 24
    assert limiter.in_flight == 0
