"""MIPROv2 over real HTTP against the simulated LM: it finds demos and an instruction better than the
starting ones, runs DSPy 3.4.1's number of trials, and gives the same program every time, resumed or not.

The simulated LM answers arithmetic questions more often with correct demos and with instructions
carrying its bonus phrases ("step by step", "double-check"); its proposed instructions carry each
phrase now and then, so an instruction search has something to find.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import dspy
import optuna
import pytest
from dspy.teleprompt.mipro_optimizer_v2 import MIPROv2 as DSPyMIPROv2

from dspex.configuration import context
from dspex.lm import LM
from dspex.metrics import numeric_equal
from dspex.modules import Predict
from dspex.optimizers import LocalExecutor, MIPROv2
from dspex.optimizers.mipro_run import MiproRun
from dspex.primitives import Module
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer, arithmetic_dataset
from dspex.testing.task import arithmetic_rows, instruction_phrases_in

METRIC = numeric_equal("answer")
# 60 validation examples: more than 50, so auto="light" evaluates trials on minibatches of 35
TRAIN, VAL, HOLDOUT = (
    arithmetic_dataset(30, seed=21),
    arithmetic_dataset(60, seed=22),
    arithmetic_dataset(150, seed=23),
)
# a seed whose proposals include an instruction with a bonus phrase (about 4 seeds in 5 have one)
SEED = 1
SETS_AS_ROWS = (arithmetic_rows(30, seed=21), arithmetic_rows(60, seed=22))  # TRAIN and VAL, for DSPy


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(latency=0.02) as sim:
        yield sim


@pytest.fixture
def lm(server: SimulatedLMServer) -> LM:
    server.control.reset()
    server.control.configure(garble=0.0, garble_fields=None)
    return LM("openai/sim", api_base=server.base_url, api_key="sim", cache=False)


def start(lm: LM, state: dict[str, Any] | None = None, trials_per_step: int | None = None) -> MiproRun:
    optimizer = MIPROv2(METRIC, auto="light", seed=SEED, trials_per_step=trials_per_step)
    return optimizer.start(
        Predict("question -> answer", lm=lm),
        trainset=TRAIN,
        valset=VAL,
        executor=LocalExecutor(64),
        state=state,
    )


async def run_to_end(run: MiproRun, lm: LM) -> Module:
    with context(lm=lm):
        return await run.run_to_end()


def dspy_trial_count(num_predictors: int, val_size: int, auto: str = "light") -> int:
    """How many evaluations DSPy 3.4.1's MIPROv2 makes for ``auto``: its own settings and trial loop,
    run with an evaluator that only counts."""
    never = dspy.LM("openai/never-called")
    theirs = DSPyMIPROv2(metric=lambda *_: 1, prompt_model=never, task_model=never, auto=auto)
    theirs.rng = random.Random(SEED)
    program = dspy.Predict("question -> answer")
    trials, valset, minibatch, instructions, demo_sets = theirs._set_hyperparams_from_run_mode(
        program, None, True, False, list(range(val_size)), None, None
    )
    calls: list[int] = []

    def evaluate(candidate: Any, devset: Any = None, callback_metadata: Any = None) -> Any:
        calls.append(len(devset))
        return SimpleNamespace(score=random.Random(len(calls)).random())

    space = {0: [f"i{i}" for i in range(instructions)]}
    sets: dict[int, list[list[Any]]] = {0: [[] for _ in range(demo_sets)]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        theirs._optimize_prompt_parameters(
            program, space, sets, evaluate, valset, trials, minibatch, 35, 5, SEED
        )
    assert num_predictors == 1  # the program above has one predictor
    return len(calls)


def searched(run: MiproRun) -> list[Any]:
    return [t for t in run.history.trials if t.kind in ("full", "minibatch")]


def without_step(trial: Any) -> dict[str, Any]:
    return {key: value for key, value in trial.to_dict().items() if key != "step"}


async def test_light_beats_zero_shot_with_a_better_instruction_and_dspys_trial_count(lm: LM) -> None:
    run = start(lm)
    best = await run_to_end(run, lm)
    assert len(searched(run)) == run.num_trials == dspy_trial_count(1, len(VAL)) == 13
    assert [t.kind for t in searched(run)].count("minibatch") == 10
    assert not any(t.error for t in run.history.trials)

    student = Predict("question -> answer", lm=lm)
    instruction_only = student.deepcopy()
    instruction_only.signature = instruction_only.signature.with_instructions(best.signature.instructions)
    zero_shot, optimized, instructed = await LocalExecutor(64).evaluate_many(
        [student, best, instruction_only], HOLDOUT, METRIC
    )
    assert optimized.score >= zero_shot.score + 15, (zero_shot.score, optimized.score)
    # the instruction alone, without demos, beats the starting one: the search found an instruction
    found = max(instruction_phrases_in(text) for text in run.instructions[0])
    assert instruction_phrases_in(best.signature.instructions) == found >= 1, run.instructions
    assert instructed.score >= zero_shot.score + 5, (zero_shot.score, instructed.score)


@pytest.mark.parametrize(("auto", "trials"), [("medium", 23), ("heavy", 34)])
async def test_medium_and_heavy_run_dspys_trial_count_end_to_end(lm: LM, auto: str, trials: int) -> None:
    run = MIPROv2(METRIC, auto=auto, seed=SEED).start(
        Predict("question -> answer", lm=lm), trainset=TRAIN, valset=VAL, executor=LocalExecutor(64)
    )
    best = await run_to_end(run, lm)
    counts = (len(searched(run)), run.num_trials, dspy_trial_count(1, len(VAL), auto))
    assert counts == (trials, trials, trials), counts
    assert not any(t.error for t in run.history.trials)
    zero_shot, optimized = await LocalExecutor(64).evaluate_many(
        [Predict("question -> answer", lm=lm), best], HOLDOUT, METRIC
    )
    assert optimized.score >= zero_shot.score + 15, (zero_shot.score, optimized.score)


async def test_same_seed_same_program_and_a_resumed_run_ends_the_same(lm: LM) -> None:
    first = start(lm)
    best = await run_to_end(first, lm)
    again = start(lm)
    assert candidate_id(await run_to_end(again, lm)) == candidate_id(best)
    assert again.history.scores == first.history.scores

    interrupted = start(lm)
    with context(lm=lm):
        while interrupted.phase != "search" or interrupted.position < 2:  # mid-search: TPE's turn next
            await interrupted.step()
    checkpoint = json.loads(json.dumps(interrupted.state_dict()))
    resumed = start(lm, state=checkpoint)
    assert candidate_id(await run_to_end(resumed, lm)) == candidate_id(best)
    assert [t.to_dict() for t in resumed.history.trials] == [t.to_dict() for t in first.history.trials]


async def test_one_trial_per_step_runs_dspys_trials_and_is_deterministic_and_resumable(lm: LM) -> None:
    batched = start(lm)
    await run_to_end(batched, lm)
    one = start(lm, trials_per_step=1)
    best = await run_to_end(one, lm)
    assert len(searched(one)) == one.num_trials == len(searched(batched)) == dspy_trial_count(1, len(VAL))
    search_steps = [t.step for t in searched(one)[1:]]  # the default program's is in the first step
    assert search_steps == list(range(search_steps[0], search_steps[0] + len(search_steps)))  # one each
    # the same trials, choices and scores: the default batches only trials TPE draws at random,
    # and evaluates the last full evaluation's two possible combinations with the trial before it
    assert [without_step(t) for t in searched(one)] == [without_step(t) for t in searched(batched)]
    assert candidate_id(best) == candidate_id(batched.result())
    assert 0 <= batched.budget.calls - one.budget.calls <= len(VAL)  # at most one spent evaluation

    again = start(lm, trials_per_step=1)
    assert candidate_id(await run_to_end(again, lm)) == candidate_id(best)
    assert [t.to_dict() for t in again.history.trials] == [t.to_dict() for t in one.history.trials]

    interrupted = start(lm, trials_per_step=1)
    with context(lm=lm):
        while interrupted.phase != "search" or interrupted.position < 3:
            await interrupted.step()
    resumed = start(lm, state=json.loads(json.dumps(interrupted.state_dict())), trials_per_step=1)
    assert candidate_id(await run_to_end(resumed, lm)) == candidate_id(best)
    assert [t.to_dict() for t in resumed.history.trials] == [t.to_dict() for t in one.history.trials]


async def test_unparseable_proposals_are_retried_then_skipped_and_recorded(
    lm: LM, server: SimulatedLMServer
) -> None:
    server.control.configure(garble=1.0, garble_fields="instruction")  # every instruction proposal
    run = start(lm)
    best = await run_to_end(run, lm)
    skipped = [t for t in run.history.trials if t.kind == "proposal" and t.error]
    assert len(skipped) == 2 and all("after 2 attempts" in (t.error or "") for t in skipped)
    assert run.instructions == [[Predict("question -> answer").signature.instructions]]
    # the search went on over the demo sets alone, with DSPy's number of trials
    assert len(searched(run)) == run.num_trials == 13
    assert best.signature.instructions == run.instructions[0][0] and best.demos


async def test_the_budget_stops_the_run_before_a_step_that_does_not_fit(
    lm: LM, server: SimulatedLMServer
) -> None:
    optimizer = MIPROv2(METRIC, auto="light", seed=SEED, max_lm_calls=250)
    with context(lm=lm):
        best = await optimizer.acompile(
            Predict("question -> answer", lm=lm), trainset=TRAIN, valset=VAL, executor=LocalExecutor(64)
        )
    history = optimizer.history
    assert history is not None and (history.stopped or "").startswith("budget"), history
    assert server.control.stats()["requests_total"] <= 250
    assert history.trials[-1].kind != "minibatch"  # the first batch of trials (175 runs) did not fit
    assert best.predictors() and history.best_score is not None


class DSPyUntilTheSearch(DSPyMIPROv2):
    """DSPy's MIPROv2 up to its search: what its random.Random holds once the proposals are made."""

    def _optimize_prompt_parameters(self, program: Any, *args: Any, **kwargs: Any) -> Any:
        assert self.rng is not None
        self.rng_at_search = self.rng.getstate()
        return program


async def test_the_runs_random_draws_are_dspys_up_to_the_search(lm: LM, server: SimulatedLMServer) -> None:
    # the same validation subset, demo set shuffles and sizes, tips and proposal rollouts: so each
    # trial's minibatch is the one DSPy draws for the same seed
    theirs_lm = dspy.LM("openai/sim", api_base=server.base_url, api_key="sim", cache=False)
    theirs = DSPyUntilTheSearch(
        dspy.evaluate.answer_exact_match,
        prompt_model=theirs_lm,
        task_model=theirs_lm,
        auto="light",
        seed=SEED,
    )
    train, val = ([dspy.Example(**row).with_inputs("question") for row in rows] for rows in SETS_AS_ROWS)
    theirs.compile(dspy.Predict("question -> answer"), trainset=train, valset=val)
    run = start(lm)
    with context(lm=lm):
        while run.phase != "search":
            await run.step()
    assert run.rng.getstate() == theirs.rng_at_search
