"""MIPROv2's settings against DSPy 3.4.1's own code, its knob checks, and its state round trip.

DSPy's numbers are computed by calling DSPy's MIPROv2 methods from the installed package: the auto
settings (``_set_hyperparams_from_run_mode``) and the trial loop itself (``_optimize_prompt_parameters``
with an evaluator that only records the size of each evaluation), so nothing here is hard-coded.
"""

from __future__ import annotations

import json
import random
import warnings
from types import SimpleNamespace
from typing import Any

import dspy
import optuna
import pytest
from dspex_optimizer_fakes import FakeExecutor, dataset
from dspy.teleprompt.mipro_optimizer_v2 import MIPROv2 as DSPyMIPROv2

from dspex.errors import ConfigurationError
from dspex.lm import LM
from dspex.metrics import exact_match
from dspex.modules import Predict
from dspex.optimizers import MIPROv2, optimizer_from_name
from dspex.optimizers.checkpoint import SearchState, read_state
from dspex.optimizers.mipro_search import TPE_STARTUP_TRIALS, Params, SearchRecord, ask_batch
from dspex.optimizers.mipro_settings import batches, resolve_run, search_steps, trial_schedule
from dspex.primitives import Module

METRIC = exact_match("answer")


class DSPyProgram(dspy.Module):
    def __init__(self, predictors: int) -> None:
        super().__init__()
        self.steps = [dspy.Predict("question -> answer") for _ in range(predictors)]


class Chain(Module):
    def __init__(self, predictors: int) -> None:
        super().__init__()
        for i in range(predictors):
            setattr(self, f"step{i}", Predict("question -> answer"))


def dspy_optimizer(auto: str | None, num_candidates: int | None = None) -> DSPyMIPROv2:
    lm = dspy.LM("openai/never-called")
    return DSPyMIPROv2(
        metric=lambda *_: 1, prompt_model=lm, task_model=lm, auto=auto, num_candidates=num_candidates
    )


@pytest.mark.parametrize("auto", ["light", "medium", "heavy"])
@pytest.mark.parametrize(("predictors", "zero_shot"), [(1, False), (2, False), (3, True), (1, True)])
@pytest.mark.parametrize("val_size", [20, 51, 150, 400, 1500])
def test_auto_settings_equal_dspy(auto: str, predictors: int, zero_shot: bool, val_size: int) -> None:
    theirs = dspy_optimizer(auto)
    theirs.rng = random.Random(9)
    valset = list(range(val_size))
    trials, val, minibatch, instructions, demo_sets = theirs._set_hyperparams_from_run_mode(
        DSPyProgram(predictors), None, True, zero_shot, valset, None, None
    )
    ours = resolve_run(
        auto=auto,
        num_candidates=None,
        num_trials=None,
        minibatch=True,
        num_predictors=predictors,
        zero_shot=zero_shot,
        val_size=val_size,
        rng=random.Random(9),
    )
    assert (ours.num_trials, ours.minibatch) == (trials, minibatch)
    assert (ours.num_instruct_candidates, ours.num_fewshot_candidates) == (instructions, demo_sets)
    assert list(ours.val_indices) == val  # the same validation subset, in the same order


def dspy_evaluations(num_trials: int, minibatch: bool, full_eval_steps: int, val_size: int) -> list[bool]:
    """Run DSPy's own trial loop; return, per evaluation, whether it was a full one."""
    theirs = dspy_optimizer(None, num_candidates=3)
    theirs.rng = random.Random(0)
    sizes: list[int] = []

    def evaluate(program: Any, devset: Any = None, callback_metadata: Any = None) -> Any:
        sizes.append(len(devset))
        return SimpleNamespace(score=random.Random(len(sizes)).random())

    # a large space, so DSPy always finds a combination it has not fully evaluated yet
    instructions = {0: [f"instruction {i}" for i in range(20)]}
    demos: dict[int, list[list[Any]]] = {0: [[] for _ in range(20)]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        theirs._optimize_prompt_parameters(
            DSPyProgram(1), instructions, demos, evaluate, list(range(val_size)),
            num_trials, minibatch, 10, full_eval_steps, 9,
        )  # fmt: skip
    return [size == val_size for size in sizes]


@pytest.mark.parametrize("num_trials", [1, 3, 5, 7, 10, 12, 16])
@pytest.mark.parametrize("steps", [1, 3, 5])
@pytest.mark.parametrize("minibatch", [True, False])
def test_trial_schedule_equals_dspy_trial_loop(num_trials: int, steps: int, minibatch: bool) -> None:
    theirs = dspy_evaluations(num_trials, minibatch, steps, val_size=60)
    ours = trial_schedule(num_trials, minibatch=minibatch, full_eval_steps=steps)
    # DSPy's first evaluation is the default program's (our trial 0), then the same sequence
    assert theirs == [True] + [trial.full or not minibatch for trial in ours]
    assert [trial.number for trial in ours] == list(range(1, len(ours) + 1))


@pytest.mark.parametrize(("num_trials", "steps"), [(10, 5), (20, 5), (7, 3), (3, 5), (6, 1)])
@pytest.mark.parametrize("minibatch", [True, False])
def test_steps_hold_every_trial_once_in_order_a_full_evaluation_first(
    num_trials: int, steps: int, minibatch: bool
) -> None:
    schedule = trial_schedule(num_trials, minibatch=minibatch, full_eval_steps=steps)
    cut = batches(schedule, steps)
    assert [trial for step in cut for trial in step] == schedule
    for step in cut:
        assert sum(not trial.full for trial in step) <= steps
        assert all(not trial.full for trial in step[1:])  # a full evaluation only opens a step


@pytest.mark.parametrize(("num_trials", "steps"), [(10, 5), (20, 5), (7, 3), (6, 1)])
@pytest.mark.parametrize("minibatch", [True, False])
@pytest.mark.parametrize("per_step", [None, 1, 2, 4])
def test_trials_per_step_cuts_the_same_trials_into_steps(
    num_trials: int, steps: int, minibatch: bool, per_step: int | None
) -> None:
    schedule = trial_schedule(num_trials, minibatch=minibatch, full_eval_steps=steps)
    cut = search_steps(
        schedule, full_eval_steps=steps, trials_per_step=per_step, modelled_from=TPE_STARTUP_TRIALS
    )
    assert [trial for step in cut for trial in step] == schedule  # every trial once, in order
    assert all(sum(not trial.full for trial in step) <= (per_step or steps) for step in cut)
    if per_step is not None:
        assert all(not trial.full for step in cut for trial in step[1:])
    if per_step is None:
        for step in cut:  # a full evaluation opens a step, or closes the last one after one trial
            assert all(not trial.full for trial in step[1:-1])
            assert not step[-1].full or len(step) == 1 or (step[-1] is schedule[-1] and len(step) == 2)
            # from TPE's first modelled trial on, a trial is asked only once all before it are told
            assert all(trial.number < TPE_STARTUP_TRIALS for trial in step[1:] if not trial.full)
    if per_step == 1:  # a checkpoint after every trial, a full evaluation included
        assert all(len(step) == 1 for step in cut) and len(cut) == len(schedule)


def test_light_default_steps_batch_only_the_random_trials() -> None:
    schedule = trial_schedule(10, minibatch=True, full_eval_steps=5)  # auto="light", one predictor
    cut = search_steps(schedule, full_eval_steps=5, trials_per_step=None, modelled_from=TPE_STARTUP_TRIALS)
    numbers = [[(trial.number, trial.full) for trial in step] for step in cut]
    assert numbers == [
        [(1, False), (2, False), (3, False), (4, False), (5, False)],
        [(6, True), (7, False), (8, False), (9, False)],  # 7-9: TPE still draws at random
        [(10, False)],  # TPE models the ten finished trials 0-9: asked after all are told
        [(11, False), (12, True)],  # the last full evaluation rides with the trial before it
    ]


def test_random_phase_asks_are_the_same_in_a_batch_as_one_at_a_time() -> None:
    record = SearchRecord([3], [6])
    record.tell(0, record.default_params(), 40.0)
    batched = ask_batch(record, 9, [1, 2, 3, 4])
    one_at_a_time = []
    for number in [1, 2, 3, 4]:
        [params] = ask_batch(record, 9, [number])
        one_at_a_time.append(params)
        record.tell(number, params, float(number * 7 % 5))  # scores told before the next ask
    assert batched == one_at_a_time


def test_from_the_tenth_finished_trial_tpe_asks_depend_on_the_scores() -> None:
    # why a trial numbered TPE_STARTUP_TRIALS or more is asked alone: what it gets depends on scores
    def asked(score: Any) -> list[Params]:
        record = SearchRecord([3], [6])
        record.tell(0, record.default_params(), 0.0)
        for number in range(1, TPE_STARTUP_TRIALS):
            [params] = ask_batch(record, 9, [number])
            record.tell(number, params, score(params))
        return [ask_batch(record, seed, [TPE_STARTUP_TRIALS])[0] for seed in range(8)]

    demos_first = asked(lambda params: 100.0 - 10 * params["0_predictor_demos"])
    demos_last = asked(lambda params: 10.0 * params["0_predictor_demos"])
    assert demos_first != demos_last
    mean_first = sum(p["0_predictor_demos"] for p in demos_first) / len(demos_first)
    mean_last = sum(p["0_predictor_demos"] for p in demos_last) / len(demos_last)
    assert mean_first < mean_last  # TPE leans towards the demo sets that scored high


def test_a_batch_of_asks_is_the_same_after_rebuilding_from_json() -> None:
    record = SearchRecord([3, 3], [6, 6])
    record.tell(0, record.default_params(), 40.0)
    first = ask_batch(record, 9, [1, 2, 3])
    for number, params in zip([1, 2, 3], first, strict=True):
        record.tell(number, params, float(number))
        record.add_minibatch(params, float(number))
    copy = SearchRecord([3, 3], [6, 6])
    copy.load(read_state(SearchState, json.loads(json.dumps(record.state().model_dump(mode="json")))))
    assert ask_batch(copy, 9, [4, 5]) == ask_batch(record, 9, [4, 5])
    assert ask_batch(record, 9, [4, 5]) != ask_batch(record, 10, [4, 5])  # the seed matters
    best = record.best_untried()
    assert best is not None and best[2] == 3.0


# -- bad input, rejected before any LM call -------------------------------------------------------


def never_called_lm() -> LM:
    return LM("openai/never", api_base="http://127.0.0.1:9/v1", api_key="none", cache=False)


@pytest.mark.parametrize(
    ("knobs", "compile_options", "match"),
    [
        ({"auto": "extreme"}, {}, "auto must be one of"),
        ({"auto": "light", "num_candidates": 5}, {}, "sets num_candidates and num_trials"),
        ({"auto": "light"}, {"num_trials": 5}, "sets num_candidates and num_trials"),
        ({"auto": None, "num_candidates": 5}, {}, "num_trials must be given"),
        ({"auto": None}, {"num_trials": 5}, "num_candidates must be given"),
        ({"auto": None, "num_candidates": 4}, {"num_trials": 0}, "num_trials must be"),
        ({"max_bootstrapped_demos": 0, "max_labeled_demos": 2}, {}, "max_bootstrapped_demos=0"),
        ({"auto": None, "num_candidates": 3}, {"num_trials": 4, "minibatch_size": 500}, "minibatch_size=500"),
        ({}, {"requires_permission_to_run": True}, "confirmation"),
        ({}, {"num_trails": 3}, "unknown argument"),
        ({"num_candidate": 3}, {}, "unknown argument"),
        ({"init_temperature": -1}, {}, "init_temperature"),
        ({"teacher_settings": {"temperature": 1}}, {}, "teacher_settings"),
        ({"log_dir": "/tmp/mipro-logs"}, {}, "log_dir is not supported"),
        ({"prompt_model": "openai/gpt-4o"}, {}, "prompt_model must be a dspex.LM"),
        ({"trials_per_step": 0}, {}, "trials_per_step must be an integer >= 1"),
        ({"trials_per_step": 2.5}, {}, "trials_per_step must be an integer >= 1"),
        ({"trials_per_step": True}, {}, "trials_per_step must be an integer >= 1"),
    ],
)
def test_bad_knobs_are_rejected_before_any_run(
    knobs: dict[str, Any], compile_options: dict[str, Any], match: str
) -> None:
    executor = FakeExecutor()
    with pytest.raises(ConfigurationError, match=match):
        optimizer = MIPROv2(METRIC, **{"prompt_model": never_called_lm(), **knobs})
        optimizer.start(
            Predict("question -> answer"),
            trainset=dataset(20),
            valset=dataset(30),
            executor=executor,
            **compile_options,
        )
    assert executor.runs == [] and executor.evaluations == []


@pytest.mark.parametrize(
    ("trainset", "valset", "match"),
    [
        ([], None, "trainset has 0"),
        (dataset(1), None, "at least 2 examples"),
        (dataset(10), [], "valset has 0"),
        ("not examples", None, "list of dspex.Example"),
    ],
)
def test_too_small_or_wrong_sets_are_rejected(trainset: Any, valset: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        MIPROv2(METRIC).start(
            Predict("question -> answer"), trainset=trainset, valset=valset, executor=FakeExecutor()
        )


def test_without_a_valset_the_last_80_percent_of_the_trainset_validates() -> None:
    run = MIPROv2(METRIC, auto=None, num_candidates=3).start(
        Predict("question -> answer"),
        trainset=dataset(10),
        num_trials=2,
        minibatch=False,
        executor=FakeExecutor(),
    )
    assert len(run.setup.trainset) == 2 and len(run.setup.valset) == 8


def test_registered_as_mipro_with_json_knobs() -> None:
    optimizer = optimizer_from_name(
        "mipro", metric=METRIC, auto="medium", seed=4, max_lm_calls=100, trials_per_step=1
    )
    assert isinstance(optimizer, MIPROv2) and optimizer.auto == "medium" and optimizer.seed == 4
    assert optimizer.trials_per_step == 1


async def test_state_round_trips_through_json_mid_bootstrap() -> None:
    executor = FakeExecutor(lambda example, rollout: int(example.answer) % 2 == 0)
    optimizer = MIPROv2(METRIC, auto="light", seed=5)
    student = Chain(2)
    # no dataset summary or program description: the first step makes no proposer request
    options: dict[str, Any] = {"program_aware_proposer": False, "data_aware_proposer": False}
    sets = {"trainset": dataset(30), "valset": dataset(60, offset=100)}
    run = optimizer.start(student, **sets, **options, executor=executor)
    assert (
        run.setup.plan.minibatch and run.num_trials == 1 + 20 + 4
    )  # 2 predictors: 20 trials, 4 full evaluations
    await run.step()
    saved = json.loads(json.dumps(run.state_dict()))
    resumed = optimizer.start(student, **sets, **options, executor=executor, state=saved)
    assert resumed.state_dict() == saved and resumed.default_score == run.default_score is not None
    assert resumed.rng.random() == run.rng.random()
    assert [t.state() for t in resumed.tasks.values()] == [t.state() for t in run.tasks.values()]
