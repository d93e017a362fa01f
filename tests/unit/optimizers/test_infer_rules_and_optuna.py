"""InferRules and BootstrapFewShotWithOptuna on the simulated LM (in-process server, real HTTP)."""

from __future__ import annotations

from typing import Any

import pytest
from dspex_optimizer_fakes import sim_lm_of

import dspex
from dspex.configuration import context
from dspex.errors import ContextWindowExceededError
from dspex.optimizers.infer_rules import RULES_HEADING
from dspex.testing import SimulatedLMServer, arithmetic_dataset

METRIC = "numeric_equal:answer"
TRAIN = arithmetic_dataset(8, seed=31)


def predict() -> dspex.Predict:
    return dspex.Predict("question -> answer")


# ---- BootstrapFewShotWithOptuna -------------------------------------------------------------------


def test_optuna_picks_one_bootstrapped_demo_per_predictor(sim: SimulatedLMServer) -> None:
    def run(seed: int) -> tuple[dspex.Module, dspex.BootstrapFewShotWithOptuna]:
        optimizer = dspex.BootstrapFewShotWithOptuna(metric=METRIC, num_candidate_programs=4, seed=seed)
        with context(lm=sim_lm_of(sim)):
            return optimizer.compile(predict(), max_demos=3, trainset=TRAIN), optimizer

    best, optimizer = run(seed=0)
    bootstrapped = optimizer.compiled_teleprompter.predictors()[0].demos
    [demo] = best.predictors()[0].demos
    assert len(bootstrapped) >= 1 and dict(demo) in [dict(d) for d in bootstrapped]
    assert optimizer.valset == TRAIN  # no valset: the trainset scores the trials
    again, _ = run(seed=0)
    assert [dict(d) for d in again.predictors()[0].demos] == [dict(demo)]  # seeded: the same choice


def test_optuna_leaves_a_predictor_without_demos_as_it_is(sim: SimulatedLMServer) -> None:
    optimizer = dspex.BootstrapFewShotWithOptuna(
        metric=lambda example, prediction, trace=None: False, max_labeled_demos=0, num_candidate_programs=2
    )
    with context(lm=sim_lm_of(sim)):
        best = optimizer.compile(predict(), max_demos=2, trainset=TRAIN[:3])
    assert best.predictors()[0].demos == []


# ---- InferRules -----------------------------------------------------------------------------------


def test_infer_rules_adds_induced_rules_to_each_candidates_instructions(sim: SimulatedLMServer) -> None:
    student = predict()
    optimizer = dspex.InferRules(num_candidates=2, num_rules=3, metric=METRIC, max_bootstrapped_demos=2)
    with context(lm=sim_lm_of(sim)):
        best = optimizer.compile(student, trainset=TRAIN)
    instructions = best.predictors()[0].signature.instructions
    base, _, rules = instructions.partition(f"\n\n{RULES_HEADING}\n")
    assert base == student.signature.instructions and rules.strip()
    assert RULES_HEADING not in student.signature.instructions  # the student is left as it was
    induced = [r for r in sim.control.requests(200) if "examples_text" in str(r)]
    assert len(induced) == 2  # one rule-induction call per candidate and predictor
    assert induced[0]["seed"] != induced[1]["seed"]  # a fresh rollout for each candidate
    asked = induced[0]["text"]  # the log keeps the prompt's start
    # no valset: the first half of the trainset trains (and is shown), the second half validates
    assert asked.startswith("[[ ## examples_text ## ]]\nInput Fields:\nquestion: " + TRAIN[0].question)
    assert not any(e.question in asked for e in TRAIN[4:])


def test_rules_are_induced_from_fewer_examples_while_they_do_not_fit() -> None:
    optimizer = dspex.InferRules(num_candidates=1, metric=METRIC)
    shown: list[int] = []

    def induce(examples_text: str) -> str:
        count = examples_text.count("Input Fields:")
        shown.append(count)
        if count > 2:
            raise ContextWindowExceededError("prompt too long")
        return "1. add carefully"

    optimizer.rules_induction_program = induce  # type: ignore[assignment]
    assert optimizer.induce_natural_language_rules(predict(), TRAIN[:5]) == "1. add carefully"
    assert shown == [5, 4, 3, 2]

    def never_fits(examples_text: str) -> Any:
        raise ContextWindowExceededError("prompt too long")

    optimizer.rules_induction_program = never_fits  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="not even one example fits"):
        optimizer.induce_natural_language_rules(predict(), TRAIN[:3])
