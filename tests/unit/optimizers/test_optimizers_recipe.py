"""What the optimizers make, without an LM: DSPy's recipes, bootstrapping semantics, history order."""

from __future__ import annotations

import random

import dspy
import pytest
from dspex_optimizer_fakes import FakeExecutor, dataset

from dspex.metrics import exact_match
from dspex.modules import ChainOfThought, Predict, majority
from dspex.optimizers import (
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    EnsembledProgram,
    LabeledFewShot,
    optimizer_from_name,
)
from dspex.optimizers.random_search import candidate_plans
from dspex.serialization import candidate_id

METRIC = exact_match("answer")


def questions(demos: list) -> list[str]:
    return [demo["question"] for demo in demos]


def test_candidate_plans_follow_dspys_seeds() -> None:
    plans = candidate_plans(4, 10, 4)
    assert [(p.seed, p.kind) for p in plans] == [
        (-3, "zero-shot"),
        (-2, "labeled"),
        (-1, "bootstrap"),
        (0, "bootstrap"),
        (1, "bootstrap"),
        (2, "bootstrap"),
        (3, "bootstrap"),
    ]
    assert plans[2].order == tuple(range(10)) and plans[2].size == 4
    for plan in plans[3:]:
        order = list(range(10))
        random.Random(plan.seed).shuffle(order)  # DSPy: Random(seed).shuffle(trainset), then randint(1, max)
        assert plan.order == tuple(order)
        assert plan.size == random.Random(plan.seed).randint(1, 4)


def test_another_seed_gives_other_reproducible_candidates() -> None:
    dspy_sets, seven, again = (
        candidate_plans(8, 20, 4),
        candidate_plans(8, 20, 4, seed=7),
        candidate_plans(8, 20, 4, seed=7),
    )
    assert seven == again
    assert [p.order for p in seven[3:]] != [p.order for p in dspy_sets[3:]]
    assert seven[:3] == dspy_sets[:3]  # the fixed candidates do not depend on the seed


def test_restrict_keeps_only_the_named_seeds() -> None:
    assert [p.seed for p in candidate_plans(4, 10, 4, restrict={-1, 2})] == [-1, 2]


@pytest.mark.parametrize("sample", [True, False])
def test_labeled_few_shot_picks_dspys_demos(sample: bool) -> None:
    train = dataset(10)
    ours = LabeledFewShot(k=3).compile(Predict("question -> answer"), trainset=train, sample=sample)
    theirs_train = [dspy.Example(**ex.to_dict()).with_inputs("question") for ex in train]
    theirs = dspy.LabeledFewShot(k=3).compile(
        dspy.Predict("question -> answer"), trainset=theirs_train, sample=sample
    )
    assert questions(ours.demos) == [demo.question for demo in theirs.demos]


async def test_bootstrap_keeps_the_first_passing_traces_then_raw_examples() -> None:
    train = dataset(12)
    odd_fail = FakeExecutor(lambda ex, rollout: int(ex.answer) % 2 == 0)  # questions 1, 3, 5, ... pass
    optimizer = BootstrapFewShot(METRIC, max_bootstrapped_demos=3, max_labeled_demos=6)
    program = await optimizer.acompile(Predict("question -> answer"), trainset=train, executor=odd_fail)
    augmented = [demo for demo in program.demos if demo.get("augmented")]
    assert questions(augmented) == ["What is 1 + 1?", "What is 3 + 1?", "What is 5 + 1?"]
    raw = [demo for demo in program.demos if not demo.get("augmented")]
    assert len(raw) == 3 and not set(questions(raw)) & set(questions(augmented))
    # the teacher never saw an example among its own demos
    assert optimizer.history is not None and optimizer.history.trials[0].kind == "bootstrap"


async def test_later_rounds_are_fresh_rollouts() -> None:
    train = dataset(4)
    executor = FakeExecutor(lambda ex, rollout: rollout == 2)  # only the third round passes
    optimizer = BootstrapFewShot(METRIC, max_bootstrapped_demos=2, max_labeled_demos=2, max_rounds=3)
    program = await optimizer.acompile(Predict("question -> answer"), trainset=train, executor=executor)
    assert [rollout for rollout, _ in executor.runs] == [None, 1, 2]
    assert questions(program.demos)[:2] == ["What is 0 + 1?", "What is 1 + 1?"]


async def test_demos_are_taken_per_predictor_from_the_trace() -> None:
    train = dataset(6)
    program = await BootstrapFewShot(METRIC, max_bootstrapped_demos=2, max_labeled_demos=2).acompile(
        ChainOfThought("question -> answer"), trainset=train, executor=FakeExecutor()
    )
    [(path, predictor)] = program.named_predictors()
    assert path == "predict" and [d["augmented"] for d in predictor.demos] == [True, True]


async def test_random_search_reports_trials_in_candidate_order_and_returns_the_best() -> None:
    train, val = dataset(10), dataset(16, offset=100)
    optimizer = BootstrapFewShotWithRandomSearch(
        METRIC, num_candidate_programs=3, max_bootstrapped_demos=3, max_labeled_demos=4
    )
    best = await optimizer.acompile(
        Predict("question -> answer"), trainset=train, valset=val, executor=FakeExecutor()
    )
    history = optimizer.history
    assert history is not None
    full = [t for t in history.trials if t.kind == "full"]
    assert [t.label.split(":")[0] for t in full] == [f"seed {s}" for s in range(-3, 3)]
    assert len({t.step for t in full}) == 1  # all candidates in one step
    assert full[0].score == 0.0  # zero-shot: no demos
    assert history.best_so_far == sorted(history.best_so_far, key=lambda s: -1 if s is None else s)
    assert candidate_id(best) == history.best_candidate_id
    # of equal best scores the first candidate wins (DSPy's strict ">")
    best_score = history.best_score
    assert best_score is not None
    assert next(t for t in full if t.score == best_score).candidate_id == history.best_candidate_id
    assert [entry["score"] for entry in optimizer.candidate_programs] == sorted(
        (t.score or 0.0 for t in full), reverse=True
    )


async def test_stop_at_score_ends_the_search_at_the_first_candidate_reaching_it() -> None:
    train, val = dataset(10), dataset(16, offset=100)
    optimizer = BootstrapFewShotWithRandomSearch(
        METRIC, num_candidate_programs=3, max_bootstrapped_demos=3, max_labeled_demos=4, stop_at_score=40
    )
    await optimizer.acompile(
        Predict("question -> answer"), trainset=train, valset=val, executor=FakeExecutor()
    )
    assert optimizer.history is not None
    scored = [t for t in optimizer.history.trials if t.kind == "full" and t.score is not None]
    assert scored[-1].score is not None and scored[-1].score >= 40
    assert all(t.score < 40 for t in scored[:-1] if t.score is not None)
    assert (optimizer.history.stopped or "").startswith("stop_at_score")


async def test_ensemble_deterministic_choice_depends_on_the_inputs_only() -> None:
    programs = [Predict("question -> answer") for _ in range(5)]
    ensemble = EnsembledProgram(programs, reduce_fn=majority, size=2, deterministic=True)
    first = ensemble._chosen({"question": "a"})
    assert all(ensemble._chosen({"question": "a"}) == first for _ in range(5))
    assert len(first) == 2 and {id(p) for p in first} <= {id(p) for p in ensemble.programs}


def test_optimizers_by_name() -> None:
    optimizer = optimizer_from_name("bootstrap-rs", metric="exact_match:answer", num_candidate_programs=2)
    assert isinstance(optimizer, BootstrapFewShotWithRandomSearch)
    assert isinstance(optimizer_from_name("BootstrapFewShot"), BootstrapFewShot)
