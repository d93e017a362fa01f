"""Predict, ChainOfThought and a custom program over real HTTP against the simulated LM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from dspex_http_programs import DraftAndCheck, SyncDraftAndCheck

import dspex
from dspex.adapters import JSONAdapter
from dspex.lm import LM, register_prices
from dspex.modules import ChainOfThought, Predict
from dspex.primitives import Example, Module, Prediction
from dspex.testing import SimulatedLMServer

QUESTION = "What is 347 + 28?"
PRICED_MODEL = "openai/sim-modules-http"
register_prices({PRICED_MODEL: (2.0, 8.0)})  # a name of this test's own: USD per 1M in / out tokens


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer() as server:
        yield server


@pytest.fixture
def lm(sim: SimulatedLMServer, tmp_path: Path) -> LM:
    sim.control.reset()
    return LM(PRICED_MODEL, api_base=sim.base_url, cache_dir=tmp_path / "lm-cache")


def _assert_usage_is_the_servers(pred: Prediction, sim: SimulatedLMServer, calls: int) -> None:
    stats = sim.control.stats()
    assert stats["completions_ok"] == calls == pred.usage.lm_calls
    assert pred.usage.prompt_tokens == stats["prompt_tokens"] > 0
    assert pred.usage.completion_tokens == stats["completion_tokens"] > 0
    expected_cost = (2.0 * stats["prompt_tokens"] + 8.0 * stats["completion_tokens"]) / 1e6
    assert pred.usage.cost_usd == pytest.approx(expected_cost)


async def test_predict_answers_with_trace_and_usage(sim: SimulatedLMServer, lm: LM) -> None:
    predict = Predict("question -> answer", lm=lm)
    pred = await predict.acall(question=QUESTION)
    assert pred.answer.strip().lstrip("-").isdigit()
    assert pred.adapter == "chat"
    assert [(s.predictor_path, s.inputs) for s in pred.trace] == [("self", {"question": QUESTION})]
    _assert_usage_is_the_servers(pred, sim, calls=1)


async def test_chain_of_thought_reasons_then_answers(sim: SimulatedLMServer, lm: LM) -> None:
    with dspex.context(lm=lm):
        pred = await ChainOfThought("question -> answer: int").acall(question=QUESTION)
    assert isinstance(pred.answer, int) and pred.reasoning
    assert [s.predictor_path for s in pred.trace] == ["predict"]
    assert list(pred.trace[0].outputs) == ["reasoning", "answer"]
    _assert_usage_is_the_servers(pred, sim, calls=1)


@pytest.mark.parametrize("program_class", [DraftAndCheck, SyncDraftAndCheck])
async def test_custom_two_step_program(sim: SimulatedLMServer, lm: LM, program_class: type[Module]) -> None:
    program = program_class()
    program.set_lm(lm)
    pred = await program.acall(question=QUESTION)
    assert [s.predictor_path for s in pred.trace] == ["draft.predict", "check"]
    assert pred.trace[1].inputs["draft"] == pred.trace[0].outputs["answer"]
    assert pred.answer == pred.trace[1].outputs["answer"]
    _assert_usage_is_the_servers(pred, sim, calls=2)


def test_the_sync_api_from_plain_sync_code(sim: SimulatedLMServer, lm: LM) -> None:
    program = SyncDraftAndCheck()
    with dspex.context(lm=lm):
        pred = program(question=QUESTION)
    assert [s.predictor_path for s in pred.trace] == ["draft.predict", "check"]
    _assert_usage_is_the_servers(pred, sim, calls=2)


async def test_concurrent_calls_each_carry_their_own_usage(sim: SimulatedLMServer, lm: LM) -> None:
    program = DraftAndCheck()
    program.set_lm(lm)
    questions = [f"What is {i} + {i * 3}?" for i in range(40)]
    preds = await asyncio.gather(*(program.acall(question=q) for q in questions))
    for question, pred in zip(questions, preds, strict=True):
        assert pred.usage.lm_calls == 2 and pred.trace[0].inputs == {"question": question}
    stats = sim.control.stats()
    assert stats["completions_ok"] == 80
    assert sum(p.usage.prompt_tokens for p in preds) == stats["prompt_tokens"]
    assert sum(p.usage.completion_tokens for p in preds) == stats["completion_tokens"]


# -- a loaded program sends the same bytes ---------------------------------------------------------


class CapturingProxy:
    """A real HTTP hop in front of the simulated LM that keeps every request body it forwards."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.bodies: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with ClientSession() as session:
            url = f"{self.upstream}{request.path_qs.removeprefix('/v1')}"
            async with session.post(url, data=body, headers=headers) as answer:
                return web.Response(
                    body=await answer.read(), status=answer.status, content_type="application/json"
                )


@pytest.fixture
async def proxy(sim: SimulatedLMServer) -> AsyncIterator[tuple[CapturingProxy, str]]:
    capturing = CapturingProxy(sim.base_url)
    app = web.Application()
    app.router.add_post("/v1/{tail:.*}", capturing.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield capturing, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


def _optimized(program: Module) -> Module:
    for i, (_, predictor) in enumerate(program.named_predictors()):
        predictor.signature = predictor.signature.with_instructions(f"Solve it step by step ({i}).")
        predictor.demos = [
            Example(question="What is 2 + 2?", draft="4", reasoning="2 and 2 make 4", answer="4"),
            Example(question="What is 10 - 3?", draft="7", reasoning="10 minus 3 is 7", answer="7"),
        ]
        predictor.config = {"temperature": 0.7, "rollout_id": i + 1}
    return program


@pytest.mark.parametrize(
    "build",
    [
        lambda: Predict("question -> answer", adapter=JSONAdapter(), max_tokens=200),
        lambda: ChainOfThought("question -> answer: int"),
        DraftAndCheck,
    ],
    ids=["predict-json", "chain-of-thought", "custom"],
)
async def test_a_loaded_program_sends_identical_request_bytes(
    proxy: tuple[CapturingProxy, str], tmp_path: Path, build: Any
) -> None:
    capturing, base_url = proxy
    original = _optimized(build())
    original.set_lm(LM("openai/sim", api_base=base_url, temperature=0.3, cache=False))
    path = tmp_path / "program.json"
    original.save(path)
    loaded = dspex.load(path, allow_modules=["dspex_http_programs"])
    assert type(loaded) is type(original)

    first = await original.acall(question=QUESTION)
    sent_by_original = list(capturing.bodies)
    second = await loaded.acall(question=QUESTION)
    sent_by_loaded = capturing.bodies[len(sent_by_original) :]

    assert sent_by_original and sent_by_loaded == sent_by_original
    assert second == first
