"""Budgets, errors, bad input (always before any run) and resuming from a state dict."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dspex_optimizer_fakes import FakeExecutor, dataset

from dspex.errors import ConfigurationError, MetricError
from dspex.lm.usage import Usage
from dspex.metrics import exact_match
from dspex.modules import Predict
from dspex.optimizers import (
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    Ensemble,
    KNNFewShot,
    LabeledFewShot,
    optimizer_from_name,
)
from dspex.optimizers.executor import per_example, rollout_copy
from dspex.primitives import Example
from dspex.serialization import candidate_id

METRIC = exact_match("answer")


def student() -> Predict:
    return Predict("question -> answer")


# -- budgets ------------------------------------------------------------------------------------


async def test_bootstrap_stops_at_max_lm_calls_with_what_it_found() -> None:
    executor = FakeExecutor(lambda ex, rollout: int(ex.answer) % 5 == 0)  # one in five passes
    optimizer = BootstrapFewShot(METRIC, max_bootstrapped_demos=4, max_labeled_demos=4, max_lm_calls=12)
    program = await optimizer.acompile(student(), trainset=dataset(40), executor=executor)
    assert executor.calls <= 12  # steps are sized to what the budget affords
    assert optimizer.history is not None and (optimizer.history.stopped or "").startswith("budget")
    assert optimizer.history.usage.lm_calls == executor.calls
    assert any(demo.get("augmented") for demo in program.demos)  # the passes found so far are kept


async def test_random_search_evaluates_only_the_candidates_the_budget_affords() -> None:
    train, val = dataset(8), dataset(10, offset=50)
    executor = FakeExecutor()
    optimizer = BootstrapFewShotWithRandomSearch(
        METRIC, num_candidate_programs=4, max_bootstrapped_demos=2, max_labeled_demos=2, max_lm_calls=40
    )
    best = await optimizer.acompile(student(), trainset=train, valset=val, executor=executor)
    history = optimizer.history
    assert history is not None
    bootstrap_calls = executor.calls
    evaluated = [t for t in history.trials if t.kind == "full"]
    assert history.usage.lm_calls == bootstrap_calls + 10 * len(evaluated) <= 40
    assert 0 < len(evaluated) < 7 and "budget" in (history.stopped or "")
    assert candidate_id(best) == history.best_candidate_id


async def test_cost_budget_stops_within_one_step() -> None:
    executor = FakeExecutor(lambda ex, rollout: False, usage_per_call=Usage(lm_calls=1, cost_usd=0.01))
    optimizer = BootstrapFewShot(
        METRIC, max_bootstrapped_demos=4, max_labeled_demos=0, max_rounds=1, max_cost_usd=0.05
    )
    await optimizer.acompile(student(), trainset=dataset(60), executor=executor)
    assert optimizer.history is not None
    spent = optimizer.history.usage.cost_usd
    first_step = len(executor.runs[0][1]) * 0.01
    assert 0.05 <= spent <= 0.05 + first_step + 1e-9
    assert (optimizer.history.stopped or "").startswith("budget")


# -- errors -------------------------------------------------------------------------------------


def raising_metric(example: Any, prediction: Any, trace: Any = None) -> bool:
    raise RuntimeError("the metric is broken")


async def test_a_metric_that_always_raises_fails_the_step_and_then_the_run() -> None:
    # DSPy's rule: the error that brings the count to max_errors is raised as it is.
    optimizer = BootstrapFewShot(raising_metric, max_bootstrapped_demos=2, max_errors=3)
    with pytest.raises(RuntimeError, match="the metric is broken"):
        await optimizer.acompile(student(), trainset=dataset(10), executor=FakeExecutor())
    history = optimizer.history
    assert history is not None
    assert history.trials[-1].failed and "every run failed" in (history.trials[-1].error or "")
    assert "max_errors=3" in (history.stopped or "")


# -- bad input, before any run ------------------------------------------------------------------

BAD_INPUTS = [
    (lambda: BootstrapFewShot(METRIC), {"trainset": []}, "trainset has 0"),
    (
        lambda: BootstrapFewShotWithRandomSearch(METRIC),
        {"trainset": dataset(8), "valset": [Example(question="q", label="x").with_inputs("question")]},
        "valset\\[0\\] has no label 'answer'",
    ),
    (
        lambda: BootstrapFewShot(METRIC),
        {"trainset": [Example(question="q", answer="1")] * 5},
        "with_inputs",
    ),
    (lambda: BootstrapFewShot(METRIC), {"trainset": dataset(8), "valsett": []}, "'valsett'"),
    (lambda: BootstrapFewShot(), {"trainset": dataset(8), "valset": dataset(2)}, "needs a metric"),
]


@pytest.mark.parametrize(("make", "kwargs", "message"), BAD_INPUTS)
async def test_bad_input_is_refused_before_any_run(make: Any, kwargs: dict[str, Any], message: str) -> None:
    executor = FakeExecutor()
    with pytest.raises(ConfigurationError, match=message):
        await make().acompile(student(), executor=executor, **kwargs)
    assert executor.runs == [] and executor.evaluations == []


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: BootstrapFewShot(METRIC, max_bootstraped_demos=2), "max_bootstraped_demos"),
        (lambda: BootstrapFewShotWithRandomSearch(METRIC, num_candidates=3), "num_candidates"),
        (lambda: LabeledFewShot(k=2, samples=True), "samples"),
        (lambda: Ensemble(reduce=max), "reduce"),
        (lambda: KNNFewShot(2, dataset(4), vectorizer=lambda t: [[1.0]] * len(t), metirc=METRIC), "metirc"),
        (lambda: BootstrapFewShot(METRIC, teacher_settings={"temperature": 1}), "temperature"),
        (lambda: optimizer_from_name("mipro-light"), "mipro-light"),
    ],
)
def test_unknown_knobs_and_names_are_configuration_errors(make: Any, name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        make()


def test_bad_knob_values_and_metrics() -> None:
    with pytest.raises(ConfigurationError, match="max_rounds"):
        BootstrapFewShot(METRIC, max_rounds=0)
    with pytest.raises(ConfigurationError, match="max_lm_calls"):
        BootstrapFewShot(METRIC, max_lm_calls=-1)
    with pytest.raises(MetricError):
        BootstrapFewShotWithRandomSearch("no_such_metric:answer")
    with pytest.raises(ConfigurationError, match="k=5"):
        KNNFewShot(5, dataset(3), vectorizer=lambda texts: [[1.0]] * len(texts))


# -- resuming -----------------------------------------------------------------------------------


async def test_a_run_resumed_from_its_state_dict_finishes_as_an_uninterrupted_one() -> None:
    train, val = dataset(12), dataset(10, offset=50)
    passes = lambda ex, rollout: int(ex.answer) % 3 != 0  # noqa: E731

    def optimizer() -> BootstrapFewShotWithRandomSearch:
        return BootstrapFewShotWithRandomSearch(METRIC, num_candidate_programs=3, max_bootstrapped_demos=3)

    whole = FakeExecutor(passes)
    expected = await optimizer().acompile(student(), trainset=train, valset=val, executor=whole)

    first = FakeExecutor(passes)
    run = optimizer().start(student(), trainset=train, valset=val, executor=first)
    await run.step()
    checkpoint = json.loads(json.dumps(run.state_dict()))  # JSON all the way
    second = FakeExecutor(passes)
    resumed = optimizer().start(student(), trainset=train, valset=val, executor=second, state=checkpoint)
    program = await resumed.run_to_end()

    assert candidate_id(program) == candidate_id(expected)
    assert first.calls + second.calls == whole.calls  # no step repeated, none missing
    assert [t.step for t in resumed.history.trials] == sorted(t.step for t in resumed.history.trials)
    assert resumed.history.trials[0] == run.history.trials[0]


async def test_the_best_so_far_mid_run_is_not_kept_as_the_result() -> None:
    run = BootstrapFewShot(METRIC, max_bootstrapped_demos=2, max_labeled_demos=2).start(
        student(), trainset=dataset(6), executor=FakeExecutor()
    )
    before = run.result()
    assert not any(demo.get("augmented") for demo in before.demos)  # nothing bootstrapped yet
    final = await run.run_to_end()
    assert [demo.get("augmented") for demo in final.demos] == [True, True] and final is run.result()


def test_rollout_copies_and_per_example_programs() -> None:
    program = Predict("question -> answer", temperature=0.0)
    copy = rollout_copy(program, 3)
    assert copy.config == {"temperature": 1.0, "rollout_id": 3} and program.config == {"temperature": 0.0}
    assert per_example(program, 3) == [program] * 3
    with pytest.raises(ConfigurationError, match="2 programs for 3 examples"):
        per_example([program, copy], 3)
