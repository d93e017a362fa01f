"""COPRO: knobs and input refused before any LM call, its steps, resuming, garbled proposals.

Proposals and evaluations go to an in-process simulated LM (deterministic, every cache off), through
a LocalExecutor that counts its evaluate_many calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from dspex_optimizer_fakes import sim_lm_of

from dspex.errors import ConfigurationError, LMError
from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.metrics import numeric_equal
from dspex.modules import Predict
from dspex.optimizers import COPRO, LocalExecutor, optimizer_class, optimizer_from_name
from dspex.primitives import Example, Module, Prediction
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer, arithmetic_dataset

METRIC = numeric_equal("answer")
TRAIN = arithmetic_dataset(12, seed=4)


class CountingExecutor(LocalExecutor):
    """A LocalExecutor that remembers how many candidates each evaluate_many call got."""

    def __init__(self) -> None:
        super().__init__(64)
        self.evaluations: list[int] = []

    async def evaluate_many(
        self, candidates: Sequence[Module], examples: Sequence[Example], metric: Any, **kwargs: Any
    ) -> list[EvaluationResult]:
        self.evaluations.append(len(candidates))
        return await super().evaluate_many(candidates, examples, metric, **kwargs)


class DraftThenAnswer(Module):
    def __init__(self, lm: LM) -> None:
        self.draft = Predict("question -> draft", lm=lm)
        self.answer = Predict("question, draft -> answer", lm=lm)

    async def aforward(self, question: str) -> Prediction:
        draft = await self.draft.acall(question=question)
        return await self.answer.acall(question=question, draft=draft.draft)


def copro(sim: SimulatedLMServer, **knobs: Any) -> COPRO:
    return COPRO(prompt_model=sim_lm_of(sim), metric=METRIC, **{"breadth": 3, "depth": 2, **knobs})


def calls(sim: SimulatedLMServer) -> int:
    return int(sim.control.stats()["completions_ok"])


# -- knobs and input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"breadth": 1}, "breadth must be greater than 1"),
        ({"breadth": 0}, "breadth must be greater than 1"),
        ({"breadth": "4"}, "breadth must be an integer"),
        ({"depth": 0}, "depth must be an integer >= 1"),
        ({"init_temperature": -0.5}, "init_temperature"),
        ({"prompt_model": "openai/gpt-4o-mini"}, "prompt_model must be a dspex.LM"),
        ({"metric": None}, "needs a metric"),
        ({"num_candidates": 3}, "unknown argument(s) 'num_candidates'"),
        ({"max_lm_calls": -1}, "max_lm_calls"),
    ],
)
def test_bad_knobs_are_refused(knobs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        COPRO(**{"metric": METRIC, **knobs})


def test_copro_is_registered_under_its_short_and_dspy_names() -> None:
    assert optimizer_class("copro") is optimizer_class("COPRO") is COPRO
    optimizer = optimizer_from_name("copro", metric="numeric_equal:answer", breadth=4, depth=2, seed=5)
    assert isinstance(optimizer, COPRO) and (optimizer.breadth, optimizer.depth, optimizer.seed) == (4, 2, 5)
    with pytest.raises(ConfigurationError, match="breadth"):
        optimizer_from_name("copro", metric="numeric_equal:answer", breadth=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trainset": []}, "trainset has 0 example"),
        ({"trainset": [Example(question="What is 1 + 1?", answer="2")]}, "no input fields marked"),
        ({"trainset": [Example(question="What is 1 + 1?").with_inputs("question")]}, "no label 'answer'"),
        ({"eval_kwargs": {"num_threads": 4, "devset": []}}, "eval_kwargs: unknown key"),
        ({"valset": "not examples"}, "valset must be a list"),
        ({"teacher": None}, "unknown argument(s) 'teacher'"),
    ],
)
async def test_bad_input_is_refused_before_any_lm_call(
    sim: SimulatedLMServer, kwargs: dict[str, Any], message: str
) -> None:
    arguments = {"trainset": TRAIN, **kwargs}
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await copro(sim).acompile(Predict("question -> answer", lm=sim_lm_of(sim)), **arguments)
    assert calls(sim) == 0


async def test_a_program_without_predictors_or_a_proposal_lm_is_refused(sim: SimulatedLMServer) -> None:
    with pytest.raises(ConfigurationError, match="program with predictors"):
        await copro(sim).acompile(Module(), trainset=TRAIN)
    no_prompt_model = COPRO(metric=METRIC, breadth=3, depth=1)  # and no LM configured
    with pytest.raises(ConfigurationError, match="needs an LM for its proposals"):
        await no_prompt_model.acompile(Predict("question -> answer", lm=sim_lm_of(sim)), trainset=TRAIN)
    assert calls(sim) == 0


# -- the steps --------------------------------------------------------------------------------------


async def test_each_round_proposes_then_evaluates_all_its_candidates_in_one_call(
    sim: SimulatedLMServer,
) -> None:
    executor, optimizer = CountingExecutor(), copro(sim, breadth=4, depth=3)
    student = Predict("question -> answer", lm=sim_lm_of(sim))
    best = await optimizer.acompile(student, trainset=TRAIN, executor=executor)
    history = optimizer.history
    assert history is not None and history.stopped is None
    assert len(executor.evaluations) == 3  # one evaluate_many per round
    proposals = [t for t in history.trials if t.kind == "proposal"]
    full = [t for t in history.trials if t.kind == "full"]
    assert len(proposals) == 3 + 4 + 4 and all(t.note and t.error is None for t in proposals)
    assert [t.label.split(",")[0] for t in full] == ["round 1/3"] * 4 + ["round 2/3"] * 4 + ["round 3/3"] * 4
    assert all("instruction: " in (t.note or "") for t in full)
    # a program proposed again is not evaluated again; each call got at most a round's candidates
    assert sum(executor.evaluations) == len({t.candidate_id for t in full}) and max(executor.evaluations) <= 4
    # the first round's last candidate is the original instruction
    assert (full[3].note or "").startswith(f"instruction: {student.signature.instructions} |")
    assert candidate_id(best) == history.best_candidate_id and history.best_score == max(
        t.score or 0 for t in full
    )
    assert best.total_calls == 12 and best.candidate_programs[0]["program"] is best
    assert (
        student.signature.instructions != best.signature.instructions
        or best.candidate_programs[0]["depth"] == 0
    )


async def test_several_predictors_are_all_proposed_for_and_evaluated_in_one_call(
    sim: SimulatedLMServer,
) -> None:
    executor, optimizer = CountingExecutor(), copro(sim, breadth=3, depth=2, track_stats=True)
    program = DraftThenAnswer(sim_lm_of(sim))
    best = await optimizer.acompile(program, trainset=TRAIN, executor=executor)
    history = optimizer.history
    assert history is not None and len(executor.evaluations) == 2
    full = [t for t in history.trials if t.kind == "full"]
    first, second = full[:6], full[6:]
    assert [t.label.split(": ")[0] for t in first] == ["round 1/2, draft"] * 3 + ["round 1/2, answer"] * 3
    assert len(second) == 2 * (3 + 3)  # with several predictors every proposal so far is scored again
    assert set(best.results_best) == set(best.results_latest) == {"draft", "answer"}
    assert best.results_best["answer"]["depth"] == [0, 1]
    # every candidate kept is the very program that was scored (the others at the previous best)
    assert {candidate_id(c["program"]) for c in best.candidate_programs} <= {t.candidate_id for t in full}
    assert candidate_id(best) in {t.candidate_id for t in full}
    assert (
        program.draft.signature.instructions == DraftThenAnswer(sim_lm_of(sim)).draft.signature.instructions
    )


async def test_a_run_resumed_from_its_state_dict_ends_as_an_uninterrupted_one(sim: SimulatedLMServer) -> None:
    student = Predict("question -> answer", lm=sim_lm_of(sim))
    reference = copro(sim, breadth=3, depth=3)
    best = await reference.acompile(student, trainset=TRAIN)
    assert reference.history is not None
    for stop_after in (1, 2, 3, 5):
        run = copro(sim, breadth=3, depth=3).start(student, trainset=TRAIN)
        for _ in range(stop_after):
            await run.step()
        saved = json.loads(json.dumps(run.state_dict()))
        resumed = copro(sim, breadth=3, depth=3).start(student, trainset=TRAIN, state=saved)
        assert resumed.step_index == stop_after
        result = await resumed.run_to_end()
        assert candidate_id(result) == candidate_id(best), stop_after
        assert resumed.history.scores == reference.history.scores
        assert [t.note for t in resumed.history.trials] == [t.note for t in reference.history.trials]


async def test_the_seed_changes_the_proposals_reproducibly(sim: SimulatedLMServer) -> None:
    student = Predict("question -> answer", lm=sim_lm_of(sim))

    async def notes(seed: int) -> list[str | None]:
        optimizer = copro(sim, breadth=4, depth=1, seed=seed)
        await optimizer.acompile(student, trainset=TRAIN)
        assert optimizer.history is not None
        return [t.note for t in optimizer.history.trials if t.kind == "proposal"]

    assert await notes(1) == await notes(1) != await notes(2)


async def test_the_budget_stops_the_run_with_the_best_so_far(sim: SimulatedLMServer) -> None:
    optimizer = copro(sim, breadth=4, depth=3, max_lm_calls=70)
    best = await optimizer.acompile(Predict("question -> answer", lm=sim_lm_of(sim)), trainset=TRAIN)
    history = optimizer.history
    assert history is not None and "budget" in (history.stopped or "")
    assert calls(sim) == history.usage.lm_calls <= 70
    assert candidate_id(best) == history.best_candidate_id


# -- unusable proposals -----------------------------------------------------------------------------


async def test_garbled_proposals_are_skipped_and_recorded_never_crashing(sim: SimulatedLMServer) -> None:
    sim.control.configure(garble=1.0, garble_fields="instruction")
    student = Predict("question -> answer", lm=sim_lm_of(sim))
    optimizer = copro(sim, breadth=3, depth=2)
    best = await optimizer.acompile(student, trainset=TRAIN)
    history = optimizer.history
    assert history is not None and history.stopped is None
    proposals = [t for t in history.trials if t.kind == "proposal"]
    assert len(proposals) == 2 + 3 and all("unparseable proposal" in (t.error or "") for t in proposals)
    full = [t for t in history.trials if t.kind == "full"]
    assert len(full) == 1  # only the original instruction was left to score
    assert best.signature.instructions == student.signature.instructions
    # each skipped proposal: two attempts, each a chat answer and a JSON fallback; then the evaluation
    assert calls(sim) == 5 * 2 * 2 + len(TRAIN)


async def test_an_lm_outage_during_proposals_fails_the_step_instead_of_skipping(
    sim: SimulatedLMServer,
) -> None:
    prompt_model = LM("openai/sim", api_base=sim.base_url, api_key="sim", cache=False, max_retries=0)
    optimizer = COPRO(prompt_model=prompt_model, metric=METRIC, breadth=3, depth=1)
    run = optimizer.start(Predict("question -> answer", lm=sim_lm_of(sim)), trainset=TRAIN)
    sim.control.down()
    try:
        with pytest.raises(LMError):
            await run.step()
    finally:
        sim.control.up()
    assert run.step_index == 0 and not [t for t in run.history.trials if t.kind == "proposal"]
    await run.step()  # the same step again once the LM is back
    assert len([t for t in run.history.trials if t.kind == "proposal" and t.error is None]) == 2
