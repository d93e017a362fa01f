"""Optimizers over real HTTP against the simulated LM: better than zero-shot, reproducible,
within budget, and candidates evaluated concurrently."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dspex.lm import LM
from dspex.metrics import numeric_equal
from dspex.modules import ChainOfThought, Predict, majority
from dspex.optimizers import (
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    Ensemble,
    KNNFewShot,
    LabeledFewShot,
    LocalExecutor,
)
from dspex.primitives import Module
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer, arithmetic_dataset

METRIC = numeric_equal("answer")
TRAIN, VAL = arithmetic_dataset(20, seed=1), arithmetic_dataset(40, seed=2)


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(latency=0.02) as sim:
        yield sim


@pytest.fixture
def sim(server: SimulatedLMServer) -> SimulatedLMServer:
    server.control.reset()
    return server


def lm_of(sim: SimulatedLMServer) -> LM:
    # temperature and max_tokens set, not left to the defaults (none sent): the simulated LM's answers
    # follow the request, and the thresholds here were set for the answers these requests get
    return LM(
        "openai/sim", api_base=sim.base_url, api_key="sim", cache=False, temperature=0.0, max_tokens=1000
    )


async def compile_labeled(student: Module, lm: LM) -> Module:
    return await LabeledFewShot(k=4).acompile(student, trainset=TRAIN)


async def compile_bootstrap(student: Module, lm: LM) -> Module:
    optimizer = BootstrapFewShot(METRIC, max_bootstrapped_demos=4, max_labeled_demos=4)
    return await optimizer.acompile(student, trainset=TRAIN)


async def compile_random_search(student: Module, lm: LM) -> Module:
    optimizer = BootstrapFewShotWithRandomSearch(METRIC, num_candidate_programs=4, max_labeled_demos=4)
    return await optimizer.acompile(student, trainset=TRAIN, valset=VAL)


async def compile_knn(student: Module, lm: LM) -> Module:
    return await KNNFewShot(4, TRAIN, lm=lm, metric=METRIC, max_labeled_demos=4).acompile(student)


async def compile_ensemble(student: Module, lm: LM) -> Module:
    members = [
        await LabeledFewShot(k=k).acompile(student, trainset=TRAIN[i:]) for i, k in enumerate((2, 3, 4))
    ]
    return await Ensemble(reduce_fn=majority).acompile(members)


COMPILERS: dict[str, Callable[[Module, LM], Any]] = {
    "labeled": compile_labeled,
    "bootstrap": compile_bootstrap,
    "random_search": compile_random_search,
    "knn": compile_knn,
    "ensemble": compile_ensemble,
}


@pytest.mark.parametrize("name", list(COMPILERS))
async def test_each_optimizer_beats_the_zero_shot_program(sim: SimulatedLMServer, name: str) -> None:
    student = Predict("question -> answer", lm=lm_of(sim))
    optimized = await COMPILERS[name](student, student.lm)
    zero_shot, result = await LocalExecutor().evaluate_many([student, optimized], VAL, METRIC)
    assert result.errors == 0
    assert result.score >= zero_shot.score + 15, (name, zero_shot.score, result.score)


async def test_bootstrapped_chain_of_thought_demos_carry_the_reasoning(sim: SimulatedLMServer) -> None:
    student = ChainOfThought("question -> answer", lm=lm_of(sim))
    optimizer = BootstrapFewShot(METRIC, max_bootstrapped_demos=3, max_labeled_demos=3)
    program = await optimizer.acompile(student, trainset=TRAIN, valset=VAL)
    demos = program.predict.demos
    assert len(demos) == 3 and all(demo.get("augmented") and demo.get("reasoning") for demo in demos)
    assert optimizer.history is not None and (optimizer.history.best_score or 0) > 80


async def test_same_seed_same_best_program_twice_and_across_executors(sim: SimulatedLMServer) -> None:
    student = Predict("question -> answer", lm=lm_of(sim))
    found = []
    for executor in (LocalExecutor(64), LocalExecutor(64), LocalExecutor(5)):
        optimizer = BootstrapFewShotWithRandomSearch(
            METRIC, num_candidate_programs=4, max_labeled_demos=4, seed=3
        )
        best = await optimizer.acompile(student, trainset=TRAIN, valset=VAL, executor=executor)
        assert optimizer.history is not None
        found.append((candidate_id(best), optimizer.history.scores))
    assert found[0] == found[1] == found[2]


async def test_the_budget_stops_the_search_within_one_step(sim: SimulatedLMServer) -> None:
    student = Predict("question -> answer", lm=lm_of(sim))
    optimizer = BootstrapFewShotWithRandomSearch(
        METRIC, num_candidate_programs=6, max_labeled_demos=4, max_lm_calls=150
    )
    best = await optimizer.acompile(student, trainset=TRAIN, valset=VAL)
    stats = sim.control.stats()
    history = optimizer.history
    assert history is not None and "budget" in (history.stopped or "")
    assert stats["completions_ok"] == history.usage.lm_calls <= 150
    evaluated = [t for t in history.trials if t.kind == "full"]
    assert 0 < len(evaluated) < 9 and candidate_id(best) == history.best_candidate_id


async def test_candidates_are_evaluated_concurrently(sim: SimulatedLMServer) -> None:
    student = Predict("question -> answer", lm=lm_of(sim))
    optimizer = BootstrapFewShotWithRandomSearch(METRIC, num_candidate_programs=4, max_labeled_demos=4)
    started = time.perf_counter()
    await optimizer.acompile(student, trainset=TRAIN, valset=VAL, executor=LocalExecutor(concurrency=128))
    elapsed = time.perf_counter() - started
    stats = sim.control.stats()
    # one candidate has at most len(VAL) = 40 requests in flight; more means several candidates at once
    assert stats["max_in_flight"] > len(VAL)
    # and the request log shows it: a zero-shot request (no demos) in flight with one carrying demos
    log = [entry for entry in sim.control.requests(limit=1000) if entry["path"] == "chat"]
    zero_shot = [e for e in log if e["demos"] == 0]
    with_demos = [e for e in log if e["demos"]]
    assert any(a["t_start"] < b["t_end"] and b["t_start"] < a["t_end"] for a in zero_shot for b in with_demos)
    assert elapsed < 15  # a sanity bound that holds on a loaded 2-core machine; overlap is shown above
