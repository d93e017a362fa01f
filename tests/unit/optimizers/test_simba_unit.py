"""SIMBA without a cluster: knobs, sampling helpers, one executor call per phase, state round trip,
and the rule strategy against the simulated LM (rules land in instructions; garbled rules are skipped)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from dspex_optimizer_fakes import FakeExecutor, dataset, sim_lm_of
from pydantic import TypeAdapter

from dspex.errors import ConfigurationError
from dspex.lm import LM
from dspex.metrics import exact_match, numeric_equal
from dspex.modules import Predict
from dspex.optimizers import SIMBA, optimizer_from_name
from dspex.optimizers.simba_rules import apply_rules, parse_rules
from dspex.optimizers.simba_strategies import (
    Trajectory,
    Variant,
    append_demo,
    demos_to_drop,
    make_buckets,
    percentile,
    poisson,
    softmax_choice,
    spaced_positions,
    top_programs,
)
from dspex.primitives import Example, Module
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer, arithmetic_dataset

METRIC = exact_match("answer")
# never called: these tests' rules are skipped before any request (no score spread in a FakeExecutor)
UNUSED_LM = LM("openai/unused", api_base="http://127.0.0.1:9", api_key="x", cache=False)


def simba(**knobs: Any) -> SIMBA:
    settings: dict[str, Any] = {"bsize": 4, "num_candidates": 3, "max_steps": 3, "prompt_model": UNUSED_LM}
    return SIMBA(METRIC, **{**settings, **knobs})


def half_pass(example: Example, rollout: int | None) -> bool:
    return int(example.answer) % 2 == 0


# --------------------------------------------------------------------------- knobs and bad input


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"bsise": 4}, "unknown argument(s) 'bsise'"),
        ({"bsize": 0}, "bsize must be an integer >= 1"),
        ({"num_candidates": 0}, "num_candidates must be"),
        ({"max_steps": -1}, "max_steps must be"),
        ({"max_demos": 1.5}, "max_demos must be"),
        ({"temperature_for_sampling": 0}, "temperature_for_sampling must be a number > 0"),
        ({"temperature_for_candidates": "hot"}, "temperature_for_candidates must be"),
        ({"prompt_model": "openai/gpt-4o"}, "prompt_model must be a dspex.LM"),
        ({"teacher_settings": {"temperature": 1.0}}, "teacher_settings: unknown key(s)"),
        ({"num_threads": 0}, "concurrency must be a positive integer"),
        ({"max_lm_calls": -5}, "max_lm_calls must be"),
    ],
)
def test_bad_knobs_are_configuration_errors(knobs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        simba(**knobs)


def test_metric_is_required_and_defaults_are_dspys() -> None:
    with pytest.raises(ConfigurationError, match="needs a metric"):
        SIMBA()
    optimizer = SIMBA(METRIC)
    assert (optimizer.bsize, optimizer.num_candidates, optimizer.max_steps, optimizer.max_demos) == (
        32,
        6,
        8,
        4,
    )
    assert optimizer.demo_input_field_maxlen == 100_000 and optimizer.prompt_model is None
    assert optimizer.temperature_for_sampling == optimizer.temperature_for_candidates == 0.2
    assert optimizer.strategies == ("append a demo", "append a rule")
    assert SIMBA(METRIC, max_demos=0).strategies == ("append a rule",)  # as DSPy: no demos, only rules


def test_registered_by_short_and_dspy_name() -> None:
    assert isinstance(optimizer_from_name("simba", metric="exact_match:answer", bsize=8), SIMBA)
    assert isinstance(optimizer_from_name("SIMBA", metric="exact_match:answer"), SIMBA)


async def test_bsize_larger_than_the_trainset_fails_before_anything_runs() -> None:
    executor = FakeExecutor()
    with pytest.raises(ConfigurationError, match=r"trainset has 3 example\(s\); bsize=4 needs at least 4"):
        await simba().acompile(Predict("question -> answer"), trainset=dataset(3), executor=executor)
    with pytest.raises(ConfigurationError, match="unknown argument"):
        await simba().acompile(Predict("question -> answer"), trainset=dataset(8), teacher=None)
    with pytest.raises(ConfigurationError, match="no label 'answer'"):
        train = [Example(question=f"q{i}").with_inputs("question") for i in range(4)]
        await simba().acompile(Predict("question -> answer"), trainset=train, executor=executor)
    assert executor.runs == [] and executor.evaluations == []


async def test_no_lm_for_rules_fails_before_any_run() -> None:
    executor = FakeExecutor()
    optimizer = simba(prompt_model=None)
    with pytest.raises(ConfigurationError, match="needs an LM to write its rules"):
        await optimizer.acompile(Predict("question -> answer"), trainset=dataset(8), executor=executor)
    assert executor.runs == []


# --------------------------------------------------------------------------- helpers


def test_softmax_choice_is_deterministic_per_seed_and_prefers_high_scores() -> None:
    options, scores = [0, 3, 5], [0.1, 0.9, 0.5]
    draws = [
        [softmax_choice(random.Random(seed), options, scores, 0.2) for _ in range(1)] for seed in range(50)
    ]
    again = [
        [softmax_choice(random.Random(seed), options, scores, 0.2) for _ in range(1)] for seed in range(50)
    ]
    assert draws == again
    rng = random.Random(7)
    many = [softmax_choice(rng, options, scores, 0.2) for _ in range(2000)]
    # exp(0.9/0.2) : exp(0.5/0.2) : exp(0.1/0.2) -> about 87%, 12%, 2%
    assert 0.83 < many.count(3) / 2000 < 0.91 and many.count(0) < many.count(5)
    flat = [softmax_choice(rng, options, scores, 1000.0) for _ in range(3000)]
    assert all(0.28 < flat.count(o) / 3000 < 0.39 for o in options)
    assert softmax_choice(random.Random(1), [1, 2], [5000.0, 4000.0], 0.2) == 1  # no overflow


def test_percentile_interpolates_like_numpy() -> None:
    values = [0.0, 1.0, 1.0, 0.0, 1.0]
    assert percentile(values, 10) == 0.0 and percentile(values, 90) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 10) == pytest.approx(1.3)
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert percentile([5.0], 50) == 5.0


def test_poisson_and_demo_drops() -> None:
    rng = random.Random(3)
    draws = [poisson(rng, 1.5) for _ in range(4000)]
    assert 1.4 < sum(draws) / len(draws) < 1.6
    assert demos_to_drop(random.Random(0), 0, 4) == set()
    assert all(demos_to_drop(random.Random(s), 4, 4) for s in range(30))  # full: at least one dropped
    assert all(d < 5 for s in range(30) for d in demos_to_drop(random.Random(s), 5, 4))


def test_buckets_put_the_most_disagreeing_example_first() -> None:
    examples = dataset(3)

    def run(score: float) -> Trajectory:
        return Trajectory(0, 0, score, (), {})

    buckets = make_buckets(examples, [[run(1), run(1)], [run(0), run(1)], [run(0), run(0)]])
    assert [b.example for b in buckets] == [examples[1], examples[0], examples[2]]
    assert [r.score for r in buckets[0].runs] == [1, 0]


def test_demo_and_rule_strategies() -> None:
    variant = Variant(("Answer.",), ((),))
    good = Trajectory(0, 0, 1.0, (("self", {"question": "x" * 50}, {"answer": "7"}),), {"answer": "7"})
    with_demo = append_demo(variant, ["self"], good, maxlen=10)
    [demo] = with_demo.demos[0]
    assert demo["augmented"] is True and demo["answer"] == "7" and demo["question"].startswith("x" * 10)
    assert len(demo["question"]) < 50 and "truncated" in demo["question"]
    ruled = apply_rules(with_demo, ["self"], {"self": "Check the sum."})
    assert ruled.instructions == ("Answer.\n\nCheck the sum.",) and ruled.demos == with_demo.demos
    assert parse_rules('{"self": "Check.", "other": "x"}', ["self"]) == {"self": "Check."}
    assert parse_rules("Check the sum.", ["self"]) == {"self": "Check the sum."}
    assert parse_rules("Check the sum.", ["a", "b"]) is None
    assert parse_rules('{"nobody": "x"}', ["self"]) is None
    as_json = TypeAdapter(Variant)
    assert as_json.validate_json(as_json.dump_json(ruled), strict=True) == ruled  # as a checkpoint holds it


# --------------------------------------------------------------------------- runs (fake executor)


async def test_each_phase_is_one_executor_call_and_the_history_says_what_happened() -> None:
    executor = FakeExecutor(half_pass)
    optimizer = simba(max_steps=2)
    best = await optimizer.acompile(Predict("question -> answer"), trainset=dataset(10), executor=executor)
    # 2 sampling calls of num_candidates x bsize runs each, per-example programs
    assert [len(questions) for _, questions in executor.runs] == [12, 12]
    # 2 minibatch evaluations of num_candidates + 1 candidates, then the final choice
    assert executor.evaluations[:2] == [4, 4] and len(executor.evaluations) == 3
    history = optimizer.history
    assert history is not None
    kinds = [t.kind for t in history.trials]
    assert kinds == ["sample", *["minibatch"] * 4, "sample", *["minibatch"] * 4, *["full"] * 3]
    full = [t for t in history.trials if t.kind == "full"]
    assert candidate_id(best) == history.best_candidate_id
    assert max(t.score or 0 for t in full) == history.best_score
    assert best.candidate_programs[0]["score"] == max(t.score or 0 for t in full) / 100  # type: ignore[attr-defined]
    assert sorted(best.trial_logs) == [0, 1]  # type: ignore[attr-defined]


async def test_state_round_trips_through_json_and_resumes_to_the_same_program() -> None:
    student, train = Predict("question -> answer"), dataset(10)
    whole = await simba().acompile(student, trainset=train, seed=5, executor=FakeExecutor(half_pass))

    run = simba().start(student, trainset=train, seed=5, executor=FakeExecutor(half_pass))
    for _ in range(3):  # sample, evaluate, sample: candidates pending
        await run.step()
    state = json.loads(json.dumps(run.state_dict()))
    assert state["state"]["phase"] == "evaluate" and state["state"]["pending"]
    resumed = simba().start(student, trainset=train, seed=5, executor=FakeExecutor(half_pass), state=state)
    assert resumed.state_dict() == state  # the loaded state is the saved one, RNG included
    assert resumed.rng.random() == run.rng.random()
    result = await resumed.run_to_end()
    assert candidate_id(result) == candidate_id(whole)


async def test_another_seed_draws_other_minibatches() -> None:
    student, train = Predict("question -> answer"), dataset(12)
    batches = []
    for seed in (0, 0, 1):
        run = simba(max_steps=1).start(student, trainset=train, seed=seed, executor=FakeExecutor(half_pass))
        await run.step()
        batches.append(run.batch)
    assert batches[0] == batches[1] != batches[2]


def test_pool_helpers_follow_dspy() -> None:
    assert spaced_positions(9, 7) == [0, 1, 3, 4, 5, 7, 8]  # round(i * 8 / 6)
    assert spaced_positions(3, 4) == [0, 1, 2] and spaced_positions(1, 7) == [0]
    assert top_programs([0.0, 0.5, 0.9, 0.7], 2) == [2, 0]  # the student replaces the last of the top
    assert top_programs([0.0, 0.5, 0.5, 0.7], 3) == [3, 1, 0]  # ties: pool order
    assert top_programs([0.0], 6) == [0]


# --------------------------------------------------------------------------- rules from the simulated LM


async def test_rules_are_appended_to_the_instructions(sim: SimulatedLMServer) -> None:
    student = Predict("question -> answer", lm=sim_lm_of(sim))
    optimizer = SIMBA(numeric_equal("answer"), bsize=8, num_candidates=3, max_steps=2, max_demos=0)
    best = await optimizer.acompile(student, trainset=arithmetic_dataset(16, seed=4))
    history = optimizer.history
    assert history is not None
    ruled = [t for t in history.trials if t.kind == "minibatch" and "skipped" not in t.label]
    assert ruled and all("append a rule" in t.label for t in ruled)
    candidates = [entry["program"] for entry in best.candidate_programs]  # type: ignore[attr-defined]
    texts = [p.signature.instructions for p in candidates]
    original = student.signature.instructions
    assert any(text.startswith(original + "\n\n") and "simulated advice" in text for text in texts)


async def test_unparseable_rules_are_retried_once_then_skipped_and_recorded(sim: SimulatedLMServer) -> None:
    sim.control.configure(garble=1.0, garble_fields="advice")
    student = Predict("question -> answer", lm=sim_lm_of(sim))
    optimizer = SIMBA(numeric_equal("answer"), bsize=8, num_candidates=3, max_steps=2, max_demos=0)
    best = await optimizer.acompile(student, trainset=arithmetic_dataset(16, seed=4))
    history = optimizer.history
    assert history is not None and history.stopped is None
    skipped = [t for t in history.trials if t.kind == "proposal"]
    assert skipped and all(t.error and "unparseable" in t.error for t in skipped)
    # program runs answer an arithmetic question (right or wrong); a rule request does not
    rule_requests = [e for e in sim.control.requests(limit=5000) if e["correct"] is None]
    # each skip: the first answer and one retry, each with the adapter's JSON fallback
    assert len(rule_requests) == 2 * 2 * len(skipped)
    assert all("simulated advice" not in p.signature.instructions for p in best.predictors())


class TwoStep(Module):
    """A program with two predictors: a draft, then a checked answer."""

    def __init__(self, lm: LM | None = None) -> None:
        self.draft = Predict("question -> answer", lm=lm)
        self.check = Predict("question, draft -> answer", lm=lm)

    async def aforward(self, question: str) -> Any:
        draft = await self.draft.acall(question=question)
        return await self.check.acall(question=question, draft=draft.answer)


async def test_each_predictor_of_a_program_gets_its_own_rule(sim: SimulatedLMServer) -> None:
    student = TwoStep(sim_lm_of(sim))
    optimizer = SIMBA(numeric_equal("answer"), bsize=8, num_candidates=3, max_steps=2, max_demos=0)
    best = await optimizer.acompile(student, trainset=arithmetic_dataset(16, seed=4))
    programs = [entry["program"] for entry in best.candidate_programs]  # type: ignore[attr-defined]
    ruled = [p for p in programs if "simulated advice" in p.draft.signature.instructions]
    assert ruled and all("simulated advice" in p.check.signature.instructions for p in ruled)


def test_a_state_of_another_program_is_refused() -> None:
    run = simba().start(Predict("question -> answer"), trainset=dataset(8))
    state = json.loads(json.dumps(run.state_dict()))
    with pytest.raises(ConfigurationError, match="other predictors"):
        simba().start(TwoStep(), trainset=dataset(8), state=state)
