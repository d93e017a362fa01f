"""The LM's callback events (dspex.lm.events) against the simulated LM (a simulation, not a model),
and the Prometheus series PrometheusCallback writes from them."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from dspex.configuration import context
from dspex.errors import LMConnectionError
from dspex.lm import LM, AdaptiveLimiter, RetryPolicy
from dspex.lm.events import LMAttempt, LMRequest
from dspex.observability.callbacks import PrometheusCallback
from dspex.testing import SimulatedLMServer
from dspex.utils.callback import BaseCallback

QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


class Collector(BaseCallback):
    """Keeps every LM start, attempt and request it hears."""

    def __init__(self) -> None:
        self.starts: list[str] = []
        self.attempts: list[tuple[str | None, LMAttempt]] = []
        self.requests: list[tuple[str | None, LMRequest]] = []

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.starts.append(call_id)

    def on_lm_attempt(self, call_id: str | None, instance: Any, attempt: LMAttempt) -> None:
        self.attempts.append((call_id, attempt))

    def on_lm_request(self, call_id: str | None, instance: Any, request: LMRequest) -> None:
        self.requests.append((call_id, request))


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def unique_model() -> str:
    return f"sim/unit-{uuid.uuid4().hex[:8]}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_attempts_carry_status_queue_wait_and_the_lm_calls_id() -> None:
    collector = Collector()
    with SimulatedLMServer(in_process=True, rate=5.0, burst=1.0) as sim:
        lm = LM(
            unique_model(), api_base=sim.base_url, cache=False,
            retry_policy=RetryPolicy(base_delay=0.01), limiter=AdaptiveLimiter(initial=4, maximum=8),
        )  # fmt: skip
        with context(callbacks=[collector]):
            answers = await asyncio.gather(*(lm.acall(messages=QUESTION) for _ in range(4)))
        await lm.aclose()
    assert len(answers) == 4
    outcomes = [attempt.outcome for _, attempt in collector.attempts]
    assert outcomes.count("ok") == 4 and "rate_limited" in outcomes
    limited = next(attempt for _, attempt in collector.attempts if attempt.outcome == "rate_limited")
    assert (limited.status, limited.error) == (429, "LMRateLimitError")
    assert all(attempt.status == 200 for _, attempt in collector.attempts if attempt.outcome == "ok")
    assert all(attempt.limiter_limit is not None for _, attempt in collector.attempts)
    assert {call_id for call_id, _ in collector.attempts} == set(collector.starts), (
        "named by on_lm_start's id"
    )
    assert [request.outcome for _, request in collector.requests] == ["ok"] * 4
    assert all(
        request.prompt_tokens > 0 and request.endpoint == sim.base_url for _, request in collector.requests
    )


async def test_queue_wait_and_the_attempt_are_measured_apart() -> None:
    collector = Collector()
    with SimulatedLMServer(in_process=True, latency=0.2) as sim:
        one_at_a_time = AdaptiveLimiter(initial=1, minimum=1, maximum=1)
        lm = LM(unique_model(), api_base=sim.base_url, cache=False, limiter=one_at_a_time)
        with context(callbacks=[collector]):
            await asyncio.gather(*(lm.acomplete(QUESTION) for _ in range(3)))
        await lm.aclose()
    attempts = sorted((attempt for _, attempt in collector.attempts), key=lambda a: a.queue_wait_s)
    assert all(0.15 < attempt.duration_s < 1.0 for attempt in attempts), "the HTTP attempt alone"
    assert attempts[0].queue_wait_s < 0.1 and attempts[-1].queue_wait_s > 0.3, "the third waited for two"
    slowest = max(request.duration_s for _, request in collector.requests)
    assert slowest >= attempts[-1].queue_wait_s + attempts[-1].duration_s - 0.01, "the call covers both"


async def test_the_prometheus_callback_writes_the_lm_series() -> None:
    model = unique_model()
    with SimulatedLMServer(in_process=True, rate=5.0, burst=1.0) as sim:
        lm = LM(
            model, api_base=sim.base_url, cache=False,
            retry_policy=RetryPolicy(base_delay=0.01), limiter=AdaptiveLimiter(initial=4, maximum=8),
        )  # fmt: skip
        with context(callbacks=[PrometheusCallback()]):
            await asyncio.gather(*(lm.acall(messages=QUESTION) for _ in range(6)))
        await lm.aclose()
        endpoint = sim.base_url
    assert sample("dspex_lm_requests_total", model=model, outcome="ok") == 6
    assert (sample("dspex_lm_requests_total", model=model, outcome="rate_limited") or 0) >= 1
    assert sample("dspex_lm_requests_total", model=model, outcome="error") == 0  # created at the start
    assert (sample("dspex_lm_errors_total", model=model, error="LMRateLimitError") or 0) >= 1
    assert sample("dspex_lm_request_duration_seconds_count", model=model) == 6
    assert sample("dspex_lm_attempt_duration_seconds_count", model=model, outcome="ok") == 6
    assert (sample("dspex_lm_queue_wait_seconds_count", endpoint=endpoint) or 0) >= 7
    assert (sample("dspex_lm_tokens_total", model=model, direction="prompt") or 0) > 0
    assert sample("dspex_lm_limiter_limit", endpoint=endpoint) is not None
    assert sample("dspex_circuit_breaker_state", endpoint=endpoint) == 0


async def test_cache_hits_and_failed_calls_are_counted(tmp_path: Path) -> None:
    model = unique_model()
    with SimulatedLMServer(in_process=True) as sim, context(callbacks=[PrometheusCallback()]):
        lm = LM(model, api_base=sim.base_url, cache_dir=tmp_path)
        await lm.acomplete(QUESTION)
        assert (await lm.acomplete(QUESTION)).cached
        await lm.aclose()
    assert sample("dspex_lm_requests_total", model=model, outcome="cache_hit") == 1
    assert sample("dspex_lm_request_duration_seconds_count", model=model) == 1, "cache hits excluded"

    down = unique_model()
    lm = LM(down, api_base=f"http://127.0.0.1:{closed_port()}/v1", cache=False, max_retries=0)
    with context(callbacks=[PrometheusCallback()]), pytest.raises(LMConnectionError):
        await lm.acall(messages=QUESTION)
    assert sample("dspex_lm_requests_total", model=down, outcome="error") == 1
    assert sample("dspex_lm_requests_total", model=down, outcome="retried") == 1
    assert sample("dspex_lm_errors_total", model=down, error="LMConnectionError") == 1
    assert sample("dspex_lm_attempt_duration_seconds_count", model=down, outcome="transient") == 1


async def test_without_callbacks_an_lm_records_no_metric() -> None:
    model = unique_model()
    with SimulatedLMServer(in_process=True) as sim:
        lm = LM(model, api_base=sim.base_url, cache=False)
        await lm.acomplete(QUESTION)
        await lm.aclose()
    assert sample("dspex_lm_requests_total", model=model, outcome="ok") is None


class DSPyStyle:
    """A callback written for DSPy: only DSPy's hooks, no dspex extensions."""

    def __init__(self) -> None:
        self.ended = 0

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        pass

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self.ended += 1


async def test_a_callback_without_the_dspex_hooks_still_hears_dspys() -> None:
    plain = DSPyStyle()
    with SimulatedLMServer(in_process=True) as sim:
        lm = LM(unique_model(), api_base=sim.base_url, cache=False)
        with context(callbacks=[plain]):
            assert await lm.acall(messages=QUESTION)
        await lm.aclose()
    assert plain.ended == 1


def test_the_programming_model_does_not_import_prometheus() -> None:
    script = textwrap.dedent(
        """
        import sys
        import dspex, dspex.lm, dspex.modules, dspex.adapters, dspex.primitives, dspex.evaluate
        from dspex.utils import DummyLM

        qa = dspex.Predict("question -> answer")
        devset = [dspex.Example(question="2 + 2?", answer="4").with_inputs("question")]
        with dspex.context(lm=DummyLM([{"answer": "4"}] * 2)):
            assert qa(question="2 + 2?").answer == "4"
            dspex.Evaluate(devset=devset, metric=lambda example, prediction, trace=None: 1.0)(qa)
        watched = ("prometheus_client", "dspex.observability")
        loaded = sorted(m for m in sys.modules if m.startswith(watched))
        print(loaded)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
