"""Evaluate over real HTTP against the simulated LM: score, request counts, usage, faults, max_errors."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspex import metrics
from dspex.errors import LMAuthenticationError
from dspex.evaluate import Evaluate, EvaluationResult
from dspex.lm import LM
from dspex.lm.usage import Usage
from dspex.modules import Predict
from dspex.primitives import Example
from dspex.testing import SimulatedLMServer, arithmetic_dataset

# numeric_equal, not exact_match: DSPy's text normalization drops the minus sign, and these tests
# compare the score with what the simulated LM says it answered right.
METRIC = metrics.numeric_equal("answer")


@pytest.fixture
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(latency=0.02) as server:
        yield server


def program(sim: SimulatedLMServer, **lm_options: Any) -> Predict:
    options: dict[str, Any] = {"api_key": "sim", "cache": False, **lm_options}
    return Predict("question -> answer", lm=LM("openai/sim", api_base=sim.base_url, **options))


def scores(result: EvaluationResult) -> list[float]:
    return [score for *_, score in result.results]


async def evaluate(program: Predict, devset: list[Example], **options: Any) -> EvaluationResult:
    return await Evaluate(devset=devset, metric=METRIC, **options).acall(program)


@pytest.mark.slow
async def test_thousand_examples_at_concurrency_256(sim: SimulatedLMServer, tmp_path: Path) -> None:
    devset = arithmetic_dataset(1000, seed=11)
    result = await evaluate(program(sim), devset, concurrency=256)
    stats = sim.control.stats()

    assert (result.processed, result.errors, result.stopped_early) == (1000, 0, False)
    assert stats["requests_total"] == stats["completions_ok"] == 1000  # one LM call per example
    assert stats["max_in_flight"] <= 256
    # the score is what the simulated LM answered right, and the mean of the per-example metric
    assert result.score == 100 * stats["correct"] / 1000
    recomputed = [metrics.score_of(METRIC(ex, pred))[0] for ex, pred, _ in result.results]
    assert scores(result) == recomputed and result.score == 100 * math.fsum(recomputed) / 1000
    assert 20 < result.score < 80
    # usage: every LM call of the run, equal to what the server counted and to the per-prediction sums
    assert result.usage.lm_calls == 1000 and result.usage.cache_hits == 0
    assert result.usage.prompt_tokens == stats["prompt_tokens"] > 0
    assert result.usage.completion_tokens == stats["completion_tokens"] > 0
    assert sum((r.usage for r in result.records), Usage()) == result.usage

    # determinism: a fresh cache directory means 1,000 new calls and the identical outcome ...
    cached = program(sim, cache=True, cache_dir=tmp_path / "cache")
    again = await evaluate(cached, devset, concurrency=256)
    assert sim.control.stats()["completions_ok"] == 2000
    assert scores(again) == scores(result) and again.score == result.score
    # ... and the same cache again answers everything without the LM
    third = await evaluate(cached, devset, concurrency=256)
    assert sim.control.stats()["completions_ok"] == 2000
    assert third.score == result.score and third.usage.cache_hits == 1000 == third.usage.lm_calls
    assert third.usage.total_tokens == 0


@pytest.mark.slow
async def test_rate_limits_and_server_errors_are_retried(sim: SimulatedLMServer) -> None:
    devset = arithmetic_dataset(400, seed=12)
    clean = await evaluate(program(sim), devset, concurrency=128)

    sim.control.reset()
    sim.control.configure(rate=200, burst=20, fail=0.1)
    stormy = await evaluate(program(sim), devset, concurrency=128)
    stats = sim.control.stats()

    assert stats["by_status"].get("429", 0) > 0 and stats["by_status"].get("500", 0) > 0
    assert stats["completions_ok"] == 400
    assert stormy.errors == 0 and scores(stormy) == scores(clean) and stormy.score == clean.score
    # retried calls are not double-counted: usage is the successful calls' tokens
    assert stormy.usage.prompt_tokens == stats["prompt_tokens"] == clean.usage.prompt_tokens


async def test_max_errors_returns_partial_results(sim: SimulatedLMServer) -> None:
    sim.control.configure(fail=1.0)
    devset = arithmetic_dataset(200, seed=13)
    result = await evaluate(program(sim, max_retries=0), devset, concurrency=8, max_errors=5)

    assert result.stopped_early and result.errors == 6 and result.processed == 6
    assert result.score == 0.0 and result.total == 200
    assert all("LMServerError" in message for message in result.error_messages.values())
    assert sim.control.stats()["requests_total"] < 200  # it stopped sending


async def test_bad_api_key_fails_the_run_at_once(tmp_path: Path) -> None:
    with SimulatedLMServer(require_api_key="right-key") as server:
        devset = arithmetic_dataset(300, seed=14)
        with pytest.raises(LMAuthenticationError):
            await evaluate(program(server, api_key="wrong-key"), devset, concurrency=16)
        assert server.control.stats()["requests_total"] < 300
