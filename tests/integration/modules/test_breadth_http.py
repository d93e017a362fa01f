"""ReAct, BestOfN, Refine, MultiChainComparison, Parallel and typed outputs over real HTTP against the
simulated LM. Requests go through a small recording proxy where a test needs their exact bytes."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp import ClientSession, web
from dspex_breadth_tools import (
    add,
    answer_is_correct,
    broken_add,
    multiply,
    never_good_enough,
    tool_calls_seen,
)
from pydantic import BaseModel, Field

import dspex
from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.errors import AdapterParseError, SecurityPolicyError
from dspex.lm import LM
from dspex.modules import BestOfN, ChainOfThought, MultiChainComparison, Parallel, Predict, ReAct, Refine
from dspex.primitives import Example, Module
from dspex.primitives.saving import load
from dspex.testing import SimulatedLMServer, arithmetic_dataset
from dspex.testing.task import parse_question

TOOLS_MODULE = "dspex_breadth_tools"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer() as server:
        yield server


@pytest.fixture
def lm(sim: SimulatedLMServer) -> LM:
    sim.control.configure(latency=0.0)
    sim.control.reset()
    tool_calls_seen.clear()
    return LM("openai/sim-breadth", api_base=sim.base_url, cache=False)


class Recorder:
    """A proxy in front of the simulated LM that keeps every request body (bytes) and answer text."""

    def __init__(self, upstream: str, session: ClientSession) -> None:
        self.upstream = upstream
        self.session = session
        self.requests: list[bytes] = []
        self.answers: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(body)
        headers = {"Content-Type": "application/json"}
        async with self.session.post(
            f"{self.upstream}/chat/completions", data=body, headers=headers
        ) as reply:
            payload = await reply.read()
            if reply.status == 200:
                self.answers.append(json.loads(payload)["choices"][0]["message"]["content"])
            return web.Response(body=payload, status=reply.status, content_type="application/json")

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.requests]


@pytest.fixture
async def recorder(sim: SimulatedLMServer, lm: LM) -> AsyncIterator[tuple[Recorder, LM]]:
    async with ClientSession() as session:
        rec = Recorder(sim.base_url, session)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", rec.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield rec, lm.copy(api_base=f"http://127.0.0.1:{port}/v1")
        finally:
            await runner.cleanup()


def _user_text(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


# -- ReAct -----------------------------------------------------------------------------------------


async def test_react_with_two_tools_reaches_the_answers_and_traces_the_calls(
    sim: SimulatedLMServer, lm: LM
) -> None:
    agent = ReAct("question -> answer: int", tools=[add, multiply], lm=lm)
    added = await agent.acall(question="What is 17 + 25?")
    multiplied = await agent.acall(question="What is 6 * 7?")

    assert added.answer == 42 and multiplied.answer == 42
    assert tool_calls_seen == [("add", 17, 25), ("multiply", 6, 7)]  # the async tool was awaited
    for pred, tool in ((added, "add"), (multiplied, "multiply")):
        assert [s.predictor_path for s in pred.trace] == ["react", "react", "extract.predict"]
        assert [s.outputs["next_tool_name"] for s in pred.trace[:2]] == [tool, "finish"]
        assert pred.trajectory["tool_name_0"] == tool and pred.trajectory["observation_0"] == 42
        assert "[[ ## observation_0 ## ]]\n42" in pred.trace[2].inputs["trajectory"]
    assert sim.control.stats()["completions_ok"] == 6 == added.usage.lm_calls + multiplied.usage.lm_calls


async def test_a_failing_tool_becomes_an_observation(lm: LM) -> None:
    agent = ReAct("question -> answer: int", tools=[broken_add, multiply], lm=lm)
    pred = await agent.acall(question="What is 3 + 4?")

    # DSPy's observation: the tool's name, then the traceback, ending with the error itself
    error = pred.trajectory["observation_0"]
    assert error.startswith("Execution error in add: ")
    assert error.rstrip().endswith("RuntimeError: the adding service is offline")
    assert error in pred.trace[1].inputs["trajectory"]  # the LM saw it on the next step
    assert pred.trajectory["tool_name_1"] == "finish" and isinstance(pred.answer, int)


async def test_max_iters_bounds_the_loop(sim: SimulatedLMServer, lm: LM) -> None:
    agent = ReAct("question -> answer: int", tools=[add], max_iters=1, lm=lm)
    pred = await agent.acall(question="What is 3 + 4?")
    assert list(pred.trajectory) == ["thought_0", "tool_name_0", "tool_args_0", "observation_0"]
    assert [s.predictor_path for s in pred.trace] == ["react", "extract.predict"]
    assert sim.control.stats()["completions_ok"] == 2


# -- BestOfN and Refine ----------------------------------------------------------------------------


async def test_best_of_n_stops_at_the_first_attempt_that_passes(
    sim: SimulatedLMServer, recorder: tuple[Recorder, LM]
) -> None:
    rec, proxied = recorder
    best = BestOfN(Predict("question -> answer", lm=proxied), N=8, reward_fn=answer_is_correct, threshold=1.0)
    attempts_needed = []
    for example in arithmetic_dataset(8, seed=5):
        sim.control.reset()
        rec.requests.clear()
        pred = await best.acall(question=example.question)
        log = sim.control.requests()
        correct = [entry["correct"] for entry in log]
        assert correct == [False] * (len(log) - 1) + [True]  # every request, up to the first right one
        assert [body["seed"] for body in rec.bodies()] == list(range(len(log)))
        assert {body["temperature"] for body in rec.bodies()} == {1.0}  # the LM's 0.0 -> 1.0
        assert pred.answer == example.answer and pred.usage.lm_calls == len(log)
        assert [s.predictor_path for s in pred.trace] == ["module"]
        attempts_needed.append(len(log))
    assert max(attempts_needed) > 1 and min(attempts_needed) == 1


async def test_best_of_n_keeps_the_best_when_none_passes_and_uses_the_lms_temperature(
    recorder: tuple[Recorder, LM],
) -> None:
    rec, proxied = recorder
    warm = proxied.copy(temperature=0.4)
    best = BestOfN(
        ChainOfThought("question -> answer", lm=warm), N=3, reward_fn=never_good_enough, threshold=1
    )
    pred = await best.acall(question="What is 2 + 2?")
    assert [(b["seed"], b["temperature"]) for b in rec.bodies()] == [(0, 0.4), (1, 0.4), (2, 0.4)]
    assert pred.usage.lm_calls == 3 and [s.predictor_path for s in pred.trace] == ["module.predict"]


async def test_refine_feeds_the_advice_back_into_the_next_attempt(recorder: tuple[Recorder, LM]) -> None:
    rec, proxied = recorder
    refine = Refine(
        Predict("question -> answer", lm=proxied), N=2, reward_fn=never_good_enough, threshold=1.0
    )
    pred = await refine.acall(question="What is 12 + 30?")

    first, feedback, second = rec.bodies()
    assert "hint_" not in _user_text(first)
    assert "[[ ## module_names ## ]]" in _user_text(feedback)
    assert "never_good_enough" in _user_text(feedback)  # the reward function's code is shown
    advice = re.search(r"Recompute the answer[^\"\n]*\(simulated advice \d{4}\)\.", rec.answers[1])
    assert advice is not None
    assert f"[[ ## hint_ ## ]]\n{advice.group(0)}" in _user_text(second)
    assert "A hint to the module from an earlier run" in second["messages"][0]["content"]
    assert (first["seed"], second["seed"]) == (0, 1)
    # the returned trace is the program's own: no hint, no advisor
    assert [(s.predictor_path, list(s.inputs)) for s in pred.trace] == [("module", ["question"])]
    assert pred.usage.lm_calls == 3


# -- Parallel and batch ----------------------------------------------------------------------------


async def test_parallel_over_500_inputs_keeps_the_requested_concurrency(
    sim: SimulatedLMServer, lm: LM
) -> None:
    sim.control.configure(latency=0.005)
    qa = Predict("question -> answer", lm=lm)
    examples = arithmetic_dataset(500, seed=9)
    results = await Parallel(concurrency=16).acall([(qa, ex) for ex in examples])

    stats = sim.control.stats()
    assert len(results) == 500 and all(r is not None for r in results)
    assert stats["completions_ok"] == 500
    assert 8 <= stats["max_in_flight"] <= 16


async def test_module_batch_is_bounded_and_in_order(sim: SimulatedLMServer, lm: LM) -> None:
    sim.control.configure(latency=0.005)
    qa = ChainOfThought("question -> answer: int", lm=lm)
    examples = arithmetic_dataset(60, seed=10)
    preds = await qa.abatch(examples, num_threads=5)
    assert sim.control.stats()["max_in_flight"] <= 5
    reasoned = [p.reasoning for p in preds]
    assert all(parse_question(ex.question) is not None for ex in examples)
    assert all(f"{q.left} {q.op} {q.right}" in r for q, r in zip(_questions(examples), reasoned, strict=True))


def _questions(examples: list[Example]) -> list[Any]:
    return [parse_question(ex.question) for ex in examples]


def test_module_batch_from_sync_code(sim: SimulatedLMServer, lm: LM) -> None:
    qa = Predict("question -> answer", lm=lm)
    results, failed, errors = qa.batch(
        arithmetic_dataset(20, seed=3), concurrency=4, return_failed_examples=True
    )
    assert len(results) == 20 and failed == [] and errors == []
    assert sim.control.stats()["max_in_flight"] <= 4


# -- typed outputs ---------------------------------------------------------------------------------


class Item(BaseModel):
    name: str
    weight: float


class Report(BaseModel):
    title: str
    score: int
    items: list[Item]


class Survey(dspex.Signature):
    """Describe the topic."""

    topic: str = dspex.InputField()
    count: int = dspex.OutputField()
    ratio: float = dspex.OutputField()
    ok: bool = dspex.OutputField()
    kind: Literal["alpha", "beta", "gamma"] = dspex.OutputField()
    tags: list[str] = dspex.OutputField()
    extra: dict[str, Any] = dspex.OutputField()
    report: Report = dspex.OutputField()


ADAPTERS = [ChatAdapter(use_json_adapter_fallback=False), JSONAdapter()]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["chat", "json"])
async def test_typed_outputs_parse_through_both_adapters(lm: LM, adapter: Any) -> None:
    pred = await Predict(Survey, lm=lm, adapter=adapter).acall(topic="rivers")
    assert pred.adapter == adapter.name
    assert isinstance(pred.count, int) and isinstance(pred.ratio, float) and isinstance(pred.ok, bool)
    assert pred.kind in ("alpha", "beta", "gamma")
    assert isinstance(pred.tags, list) and all(isinstance(tag, str) for tag in pred.tags)
    assert isinstance(pred.extra, dict)
    assert isinstance(pred.report, Report) and len(pred.report.items) == 2
    assert all(isinstance(item, Item) for item in pred.report.items)


class StrictReport(BaseModel):
    title: str
    score: int = Field(ge=1_000_000)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["chat", "json"])
async def test_a_value_that_does_not_validate_is_a_parse_error_with_the_raw_text(
    lm: LM, adapter: Any
) -> None:
    plain = await Predict("question -> answer: int", lm=lm, adapter=adapter).acall(question="What is 2 + 2?")
    assert isinstance(plain.answer, int)  # the same request without the constraint parses

    big = dspex.make_signature("question -> answer: int").with_updated_field(
        "answer", constraints={"ge": 10**6}
    )
    with pytest.raises(AdapterParseError) as caught:
        await Predict(big, lm=lm, adapter=adapter).acall(question="What is 2 + 2?")
    assert caught.value.field == "answer" and "greater than or equal" in str(caught.value)
    assert "answer" in caught.value.raw_text

    nested = dspex.make_signature(
        {"topic": (str, dspex.InputField()), "report": (StrictReport, dspex.OutputField())}
    )
    with pytest.raises(AdapterParseError) as caught:
        await Predict(nested, lm=lm, adapter=adapter).acall(topic="rivers")
    assert caught.value.field == "report" and "score" in str(caught.value)
    assert "simulated title" in caught.value.raw_text


async def test_chat_falls_back_to_json_once_and_still_rejects(sim: SimulatedLMServer, lm: LM) -> None:
    big = dspex.make_signature("question -> answer: int").with_updated_field(
        "answer", constraints={"ge": 10**6}
    )
    with pytest.raises(AdapterParseError) as caught:
        await Predict(big, lm=lm).acall(question="What is 2 + 2?")
    assert caught.value.adapter == "ChatAdapter" and "[[ ## answer ## ]]" in caught.value.raw_text
    assert sim.control.stats()["completions_ok"] == 2  # the chat call, then the one JSON retry


# -- saving and loading ----------------------------------------------------------------------------


def _programs(lm: LM) -> dict[str, tuple[Module, dict[str, Any]]]:
    question = {"question": "What is 21 + 21?"}
    attempts = [{"reasoning": f"I add the numbers, try {i}", "answer": str(40 + i)} for i in range(3)]
    mcc = MultiChainComparison("question -> answer", M=3, lm=lm)
    mcc.predict.demos = [Example(question="What is 1 + 1?", answer="2", rationale="1 + 1 is 2")]
    return {
        "react": (ReAct("question -> answer: int", tools=[add, multiply], max_iters=4, lm=lm), question),
        "mcc": (mcc, {**question, "completions": attempts}),
        "best_of_n": (BestOfN(Predict("question -> answer", lm=lm), 2, never_good_enough, 1.0), question),
        "refine": (Refine(ChainOfThought("question -> answer", lm=lm), 2, never_good_enough, 1.0), question),
    }


@pytest.mark.parametrize("name", ["react", "mcc", "best_of_n", "refine"])
async def test_save_and_load_send_identical_requests(
    name: str, recorder: tuple[Recorder, LM], tmp_path: Path
) -> None:
    rec, proxied = recorder
    program, inputs = _programs(proxied)[name]
    path = tmp_path / f"{name}.json"
    program.save(path)
    loaded = load(path, allow_modules=[TOOLS_MODULE])
    assert type(loaded) is type(program) and loaded.dump() == program.dump()

    before = await program.acall(**inputs)
    sent_before = list(rec.requests)
    rec.requests.clear()
    after = await loaded.acall(**inputs)
    assert rec.requests == sent_before and sent_before
    assert dict(after.items()) == dict(before.items())


def test_a_react_program_imports_its_tools_only_when_allowed(tmp_path: Path, lm: LM) -> None:
    path = tmp_path / "agent.json"
    ReAct("question -> answer", tools=[add], lm=lm).save(path)
    with pytest.raises(SecurityPolicyError, match=TOOLS_MODULE):
        load(path, allow_modules=["somewhere_else"])
    assert isinstance(load(path, allow_modules=[TOOLS_MODULE]), ReAct)
