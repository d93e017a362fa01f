"""COPRO over real HTTP against the simulated LM: it finds a better instruction, not only a better
program; each round's proposals go out together and its candidates are evaluated in one call;
resuming, budgets and garbled proposals."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.metrics import numeric_equal
from dspex.modules import Predict
from dspex.optimizers import COPRO, LocalExecutor
from dspex.primitives import Example, Module
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer, arithmetic_dataset
from dspex.testing.task import instruction_phrases_in

METRIC = numeric_equal("answer")
TRAIN, VAL = arithmetic_dataset(100, seed=1), arithmetic_dataset(200, seed=2)
SMALL_TRAIN = TRAIN[:20]


class CountingExecutor(LocalExecutor):
    """A LocalExecutor that remembers how many candidates each evaluate_many call got."""

    def __init__(self, concurrency: int = 128) -> None:
        super().__init__(concurrency)
        self.evaluations: list[int] = []

    async def evaluate_many(
        self, candidates: Sequence[Module], examples: Sequence[Example], metric: Any, **kwargs: Any
    ) -> list[EvaluationResult]:
        self.evaluations.append(len(candidates))
        return await super().evaluate_many(candidates, examples, metric, **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(latency=0.02) as sim:
        yield sim


@pytest.fixture
def sim(server: SimulatedLMServer) -> SimulatedLMServer:
    server.control.configure(garble=0.0, garble_fields=None, latency=0.02)
    server.control.reset()
    return server


def lm_of(sim: SimulatedLMServer) -> LM:
    return LM("openai/sim", api_base=sim.base_url, api_key="sim", cache=False)


def with_instruction(student: Predict, instructions: str) -> Predict:
    alone = student.reset_copy()  # no demos: the instruction is all that differs
    alone.signature = alone.signature.with_instructions(instructions)
    return alone


async def test_copro_finds_an_instruction_better_than_the_starting_one(sim: SimulatedLMServer) -> None:
    student = Predict("question -> answer", lm=lm_of(sim))
    optimizer = COPRO(prompt_model=lm_of(sim), metric=METRIC, breadth=6, depth=2, seed=2)
    best = await optimizer.acompile(student, trainset=TRAIN)
    found = best.signature.instructions
    assert instruction_phrases_in(found) > instruction_phrases_in(student.signature.instructions) == 0
    alone = with_instruction(student, found)
    zero_shot, optimized, instruction_only = await LocalExecutor(128).evaluate_many(
        [student, best, alone], VAL, METRIC
    )
    assert optimized.errors == 0 and instruction_only.errors == 0
    assert optimized.score >= zero_shot.score + 5, (zero_shot.score, optimized.score, found)
    assert instruction_only.score >= zero_shot.score + 5, (zero_shot.score, instruction_only.score, found)


async def test_proposals_go_out_together_and_a_rounds_candidates_in_one_evaluation(
    sim: SimulatedLMServer,
) -> None:
    sim.control.configure(latency=0.1)
    executor = CountingExecutor(128)
    optimizer = COPRO(prompt_model=lm_of(sim), metric=METRIC, breadth=5, depth=2)
    await optimizer.acompile(
        Predict("question -> answer", lm=lm_of(sim)), trainset=SMALL_TRAIN, executor=executor
    )
    assert optimizer.history is not None
    evaluated = [t for t in optimizer.history.trials if t.kind == "full"]
    assert len(executor.evaluations) == 2 and sum(executor.evaluations) == len(
        {t.candidate_id for t in evaluated}
    )
    log = [entry for entry in sim.control.requests(limit=5000) if entry["path"] == "chat"]
    first_proposals = [e for e in log if "basic_instruction" in e["text"]]
    assert len(first_proposals) == 4
    # all four in flight at once: each started before any of them ended
    assert max(e["t_start"] for e in first_proposals) < min(e["t_end"] for e in first_proposals)
    # more requests in flight than one candidate has examples: several candidates at once
    assert sim.control.stats()["max_in_flight"] > len(SMALL_TRAIN)


async def test_same_seed_same_result_across_executors_and_after_a_resume(sim: SimulatedLMServer) -> None:
    student = Predict("question -> answer", lm=lm_of(sim))

    def make() -> COPRO:
        return COPRO(prompt_model=lm_of(sim), metric=METRIC, breadth=4, depth=3, seed=7)

    found = []
    for executor in (LocalExecutor(128), LocalExecutor(5)):
        optimizer = make()
        best = await optimizer.acompile(student, trainset=SMALL_TRAIN, executor=executor)
        assert optimizer.history is not None
        found.append((candidate_id(best), optimizer.history.scores))
    assert found[0] == found[1]

    run = make().start(student, trainset=SMALL_TRAIN)
    for _ in range(3):  # proposals, evaluation, proposals of round 2: stopped mid-run
        await run.step()
    saved = json.loads(json.dumps(run.state_dict()))
    calls_before = sim.control.stats()["completions_ok"]
    resumed = make().start(student, trainset=SMALL_TRAIN, state=saved)
    result = await resumed.run_to_end()
    assert (candidate_id(result), resumed.history.scores) == found[0]
    # the resumed run makes only the remaining calls: round 2's evaluation and round 3
    assert sim.control.stats()["completions_ok"] - calls_before == resumed.history.usage.lm_calls - (
        run.history.usage.lm_calls
    )


async def test_the_budget_stops_copro_within_one_step(sim: SimulatedLMServer) -> None:
    optimizer = COPRO(prompt_model=lm_of(sim), metric=METRIC, breadth=6, depth=3, max_lm_calls=300)
    best = await optimizer.acompile(Predict("question -> answer", lm=lm_of(sim)), trainset=TRAIN)
    history = optimizer.history
    assert history is not None and "budget" in (history.stopped or "")
    assert sim.control.stats()["completions_ok"] == history.usage.lm_calls <= 300
    evaluated = [t for t in history.trials if t.kind == "full"]
    assert 0 < len(evaluated) < 18 and candidate_id(best) == history.best_candidate_id


async def test_garbled_proposals_are_retried_skipped_and_recorded(sim: SimulatedLMServer) -> None:
    sim.control.configure(garble=0.7, garble_fields="instruction")
    student = Predict("question -> answer", lm=lm_of(sim))
    optimizer = COPRO(prompt_model=lm_of(sim), metric=METRIC, breadth=8, depth=2)
    best = await optimizer.acompile(student, trainset=SMALL_TRAIN)
    history = optimizer.history
    assert history is not None and history.stopped is None
    proposals = [t for t in history.trials if t.kind == "proposal"]
    assert len(proposals) == 7 + 8
    skipped = [t for t in proposals if t.error is not None]
    assert skipped and len(skipped) < len(proposals)
    assert all(
        "unparseable proposal" in (t.error or "") and "after 2 attempts" in (t.error or "") for t in skipped
    )
    evaluated = [t for t in history.trials if t.kind == "full"]
    assert len(evaluated) == len(proposals) - len(skipped) + 1  # every usable one, and the original
    assert candidate_id(best) in {t.candidate_id for t in evaluated}
