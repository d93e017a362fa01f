"""BootstrapFinetune and BetterTogether with dspex's own LM, fine-tuned through the simulated LM's
OpenAI-compatible fine-tuning API (a simulation: in-process server, real HTTP; the tuned model's
gain is the rule in dspex.testing.task). Accuracies are measured on a held-out set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import dspex
from dspex.errors import ConfigurationError, FinetuneError
from dspex.evaluate import Evaluate
from dspex.lm.finetune import OpenAIProvider
from dspex.primitives import Example
from dspex.testing import SimulatedLMServer, arithmetic_dataset

METRIC = "numeric_equal:answer"
TRAIN = arithmetic_dataset(40, seed=11)
HELD_OUT = arithmetic_dataset(100, seed=12)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(in_process=True, finetune_seconds=0.1) as server:
        yield server


@pytest.fixture
def lm(sim: SimulatedLMServer, tmp_path: Path) -> dspex.LM:
    return dspex.LM(
        "sim/arith", api_base=sim.base_url, cache_dir=tmp_path, provider=OpenAIProvider(poll_interval=0.02)
    )


def student(lm: dspex.LM) -> dspex.Predict:
    program = dspex.Predict("question -> answer")
    program.set_lm(lm)
    return program


def accuracy(program: dspex.Module) -> float:
    return float(Evaluate(devset=HELD_OUT, metric=METRIC, display_progress=False)(program).score)


def test_bootstrap_finetune_tunes_the_lm_and_the_tuned_model_is_more_accurate(lm: dspex.LM) -> None:
    untuned = accuracy(student(lm))
    tuned = dspex.BootstrapFinetune(metric=METRIC).compile(student(lm), trainset=TRAIN)
    tuned_lm = tuned.predictors()[0].lm
    assert isinstance(tuned_lm, dspex.LM) and tuned_lm.model.startswith("sim/ft:arith:dspex:ftjob-")
    assert tuned._compiled is True
    assert accuracy(tuned) >= untuned + 10, (untuned, accuracy(tuned))  # percentage points


def test_corrupted_labels_give_no_better_model(lm: dspex.LM) -> None:
    # every gold answer off by 7: the teacher's right answers fail the metric and only the rare wrong
    # answer that lands on a corrupted value passes, so what reaches the provider (if anything) is
    # wrong answers; the simulated provider refuses a file under 10 examples, as OpenAI does
    corrupted = [
        Example(question=e.question, answer=str(int(e.answer) + 7)).with_inputs("question") for e in TRAIN
    ]
    untuned = accuracy(student(lm))
    try:
        tuned = dspex.BootstrapFinetune(metric=METRIC).compile(student(lm), trainset=corrupted)
    except (ConfigurationError, FinetuneError) as refused:  # no passing trace / too few to train on
        assert "passed the metric" in str(refused) or "at least 10" in str(refused)
        return
    assert accuracy(tuned) <= untuned + 2, (untuned, accuracy(tuned))


def test_no_passing_trace_is_an_error_before_any_upload(lm: dspex.LM, sim: SimulatedLMServer) -> None:
    uploaded = sim.control.stats()["files"]["uploaded"]
    unlabeled = [
        Example(question=e.question, answer="not a number").with_inputs("question") for e in TRAIN[:5]
    ]
    with pytest.raises(ConfigurationError, match="none of the 5 teacher runs passed the metric"):
        dspex.BootstrapFinetune(metric=METRIC).compile(student(lm), trainset=unlabeled)
    assert sim.control.stats()["files"]["uploaded"] == uploaded


def test_a_failed_job_fails_compile_with_the_providers_reason(lm: dspex.LM, sim: SimulatedLMServer) -> None:
    sim.control.configure(finetune_fail=1.0)
    try:
        with pytest.raises(FinetuneError, match=r"ftjob-\S+ .*Simulated training failure"):
            dspex.BootstrapFinetune(metric=METRIC).compile(student(lm), trainset=TRAIN[:30])
    finally:
        sim.control.configure(finetune_fail=0.0)


def test_better_together_prompts_then_weights_beats_either_alone(lm: dspex.LM) -> None:
    def run(strategy: str) -> float:
        optimizer = dspex.BetterTogether(
            metric=METRIC,
            p=dspex.BootstrapFewShot(metric=METRIC, max_bootstrapped_demos=4),
            w=dspex.BootstrapFinetune(metric=METRIC),
        )
        best = optimizer.compile(student(lm), trainset=TRAIN, strategy=strategy, valset_ratio=0.25, seed=0)
        assert best.flag_compilation_error_occurred is False
        return accuracy(best)

    prompts, weights, both = run("p"), run("w"), run("p -> w")
    assert both > max(prompts, weights), (prompts, weights, both)


def test_better_together_keeps_the_prompt_step_when_the_weight_step_fails(
    lm: dspex.LM, sim: SimulatedLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    sim.control.configure(finetune_fail=1.0)
    try:
        optimizer = dspex.BetterTogether(
            metric=METRIC,
            p=dspex.BootstrapFewShot(metric=METRIC, max_bootstrapped_demos=4),
            # another suffix: not the same job as the earlier test's (which a rerun would re-attach to)
            w=dspex.BootstrapFinetune(metric=METRIC, train_kwargs={"suffix": "failing"}),
        )
        best = optimizer.compile(student(lm), trainset=TRAIN, strategy="p -> w", valset_ratio=0.25, seed=0)
    finally:
        sim.control.configure(finetune_fail=0.0)
    assert best.flag_compilation_error_occurred is True
    assert [c["strategy"] for c in best.candidate_programs] == ["p", ""]
    assert best.predictors()[0].lm.model == "sim/arith"
    assert "FinetuneError" in caplog.text and "Simulated training failure" in caplog.text
