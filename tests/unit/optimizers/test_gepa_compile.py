"""GEPA end to end on a scripted task: feedback finds what scores alone cannot; budgets stop it cleanly."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from gepa_fakes import MAGIC, ScriptedLM, dataset, feedback_metric, score_only_metric

from dspex.configuration import context
from dspex.errors import ConfigurationError
from dspex.evaluate import Evaluate
from dspex.modules import Predict
from dspex.optimizers import GEPA, LocalExecutor
from dspex.optimizers.gepa import DspyAdapter, DspyGEPAResult, FeedbackMetricError
from dspex.optimizers.gepa.budgets import auto_budget
from dspex.primitives import Module, Prediction


def student() -> Predict:
    return Predict("question -> answer")


async def accuracy(program: Module, lm: ScriptedLM) -> float:
    with context(lm=lm):
        result = await Evaluate(devset=dataset(6, offset=100), metric=score_only_metric).acall(program)
    return float(result.score)


async def test_feedback_finds_the_instruction_that_zero_shot_lacks() -> None:
    lm = ScriptedLM()
    optimizer = GEPA(feedback_metric, max_metric_calls=40, reflection_lm=lm, track_stats=True, seed=1)
    with context(lm=lm):
        best = await optimizer.acompile(student(), trainset=dataset(6), valset=dataset(4, offset=50))
    calls = lm.calls
    assert MAGIC in best.signature.instructions
    assert await accuracy(best, lm) == 100.0 > await accuracy(student(), lm)
    details = best.detailed_results  # type: ignore[attr-defined]
    assert isinstance(details, DspyGEPAResult) and details.best_idx > 0
    assert details.parents[0] == [None] and details.val_aggregate_scores[0] == 0.0
    assert details.to_dict()["best_idx"] == details.best_idx
    assert set(details.highest_score_achieved_per_val_task.values()) == {1.0}
    history = optimizer.history
    assert history is not None and history.best_score == 100.0 and history.usage.lm_calls == calls


async def test_scores_alone_do_not_find_it_at_the_same_budget() -> None:
    lm = ScriptedLM()
    optimizer = GEPA(score_only_metric, max_metric_calls=40, reflection_lm=lm, seed=1)
    with context(lm=lm):
        best = await optimizer.acompile(student(), trainset=dataset(6), valset=dataset(4, offset=50))
    assert MAGIC not in best.signature.instructions
    assert lm.prompts and all("This trajectory got a score of 0.0." in p for p in lm.prompts)


@pytest.mark.parametrize("limit", [{"max_cost_usd": 0.05}, {"max_lm_calls": 5}])
async def test_the_lm_budget_stops_the_run_with_the_best_so_far(limit: dict[str, Any]) -> None:
    lm = ScriptedLM(cost_usd=0.01)
    optimizer = GEPA(feedback_metric, max_metric_calls=1000, reflection_lm=lm, num_threads=2, **limit)
    with context(lm=lm):
        best = await optimizer.acompile(student(), trainset=dataset(6), valset=dataset(4, offset=50))
    history = optimizer.history
    assert history is not None and (history.stopped or "").startswith("budget")
    # At most what was in flight when the cap was reached: num_threads runs.
    assert 5 <= history.usage.lm_calls <= 5 + 2
    assert history.usage.cost_usd == pytest.approx(0.01 * history.usage.lm_calls)
    assert isinstance(best, Predict)


async def test_the_usd_cap_covers_the_reflection_lm_and_keeps_the_best_so_far() -> None:
    task_lm = ScriptedLM(cost_usd=0.0)  # free: every cent of the run is the reflection LM's
    reflection_lm = ScriptedLM(cost_usd=0.01)
    optimizer = GEPA(
        feedback_metric,
        max_metric_calls=1000,  # far beyond what the cap allows: only the cap can stop this run
        reflection_lm=reflection_lm,
        skip_perfect_score=False,  # a perfect parent is reflected on again: each round costs a cent
        max_cost_usd=0.045,
        seed=1,
    )
    with context(lm=task_lm):
        best = await optimizer.acompile(student(), trainset=dataset(6), valset=dataset(4, offset=50))
    history = optimizer.history
    assert history is not None and (history.stopped or "").startswith("budget")
    assert history.usage.cost_usd == pytest.approx(0.01 * reflection_lm.calls)
    # the cap, plus at most the one reflection call in flight when it was reached
    assert 0.045 <= history.usage.cost_usd <= 0.045 + 0.01 + 1e-9
    assert task_lm.calls > 0 and history.usage.lm_calls == task_lm.calls + reflection_lm.calls
    assert MAGIC in best.signature.instructions  # the first round's find, kept when the cap hit


async def test_a_cap_hit_during_the_seed_evaluation_returns_the_student() -> None:
    lm = ScriptedLM(cost_usd=1.0)
    optimizer = GEPA(feedback_metric, max_metric_calls=100, reflection_lm=lm, max_cost_usd=0.0)
    with context(lm=lm):
        best = await optimizer.acompile(student(), trainset=dataset(3))
    assert lm.calls == 0 and best.signature.instructions == student().signature.instructions


async def test_runs_go_through_the_given_executor() -> None:
    lm = ScriptedLM()
    executor = CountingExecutor(2)
    optimizer = GEPA(feedback_metric, max_metric_calls=12, reflection_lm=lm)
    with context(lm=lm):
        await optimizer.acompile(
            student(), trainset=dataset(3), valset=dataset(3, offset=9), executor=executor
        )
    assert executor.examples >= 3  # the seed's valset evaluation at least


class CountingExecutor(LocalExecutor):
    examples = 0

    async def run(self, program: Any, examples: Any, **kwargs: Any) -> list[Any]:
        self.examples += len(examples)
        return await super().run(program, examples, **kwargs)


async def test_a_metric_that_returns_no_score_fails_at_its_first_call() -> None:
    def says_yes(
        gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> str:
        return "yes"

    lm = ScriptedLM()
    optimizer = GEPA(says_yes, max_metric_calls=10, reflection_lm=lm)
    with context(lm=lm), pytest.raises(FeedbackMetricError, match="says_yes returned 'yes'"):
        await optimizer.acompile(student(), trainset=dataset(2))


async def test_an_unusable_reflection_answer_is_a_failed_proposal_not_a_crash() -> None:
    lm = ScriptedLM()
    lm._reflect = lambda prompt: "  "  # type: ignore[method-assign]  # no instruction, every time
    optimizer = GEPA(feedback_metric, max_metric_calls=12, reflection_lm=lm, track_stats=True)
    with context(lm=lm):
        best = await optimizer.acompile(student(), trainset=dataset(3))
    assert len(best.detailed_results.candidates) == 1  # type: ignore[attr-defined]
    # each reflection asked once more, then given up (several are asked at once: ahead of time)
    asked = Counter(lm.prompts)
    assert asked and all(times >= 2 for times in asked.values())


def test_custom_component_selector_and_proposer_are_used() -> None:
    class TwoSteps(Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = Predict("question -> answer")
            self.second = Predict("question, draft -> answer")

        def forward(self, question: str) -> Prediction:
            answer = self.first(question=question).answer
            return self.second(question=question, draft=answer)

    selected: list[list[str]] = []

    def only_second(
        state: Any, trajectories: Any, scores: Any, idx: int, candidate: dict[str, str]
    ) -> list[str]:
        selected.append(sorted(candidate))
        return ["second"]

    def proposer(
        candidate: dict[str, str], reflective_dataset: Any, components_to_update: list[str]
    ) -> dict[str, str]:
        assert list(reflective_dataset) == ["second"] and reflective_dataset["second"][0]["Feedback"]
        return {name: f"Answer, and say {MAGIC}." for name in components_to_update}

    lm = ScriptedLM()
    optimizer = GEPA(
        feedback_metric, max_metric_calls=20, instruction_proposer=proposer, component_selector=only_second
    )
    with context(lm=lm):
        best = optimizer.compile(TwoSteps(), trainset=dataset(3))
    assert selected and selected[0] == ["first", "second"]
    assert MAGIC in best.second.signature.instructions and MAGIC not in best.first.signature.instructions


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"gepa_kwargs": {"max_reflection_cost": 1.0}}, ValueError, "max_cost_usd"),
        (
            {"gepa_kwargs": {"reflection_prompt_template": "<curr_param> <side_info>"}},
            ValueError,
            "prompt_template",
        ),
        ({"reflection_lm": None}, ConfigurationError, "reflection_lm"),
        ({"max_metric_calls": None}, ConfigurationError, "exactly one"),
        ({"track_best_outputs": True}, ConfigurationError, "track_stats"),
        ({"num_trials": 3}, ConfigurationError, "unknown argument"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, Any], error: type, message: str) -> None:
    arguments: dict[str, Any] = {"max_metric_calls": 10, "reflection_lm": ScriptedLM(), **kwargs}
    with pytest.raises(error, match=message):
        GEPA(feedback_metric, **arguments)


async def test_bad_compile_input_fails_before_any_call() -> None:
    lm = ScriptedLM()
    optimizer = GEPA(feedback_metric, max_metric_calls=10, reflection_lm=lm)
    with pytest.raises(ConfigurationError, match="teacher"):
        await optimizer.acompile(student(), trainset=dataset(2), teacher=student())
    with pytest.raises(ConfigurationError, match="trainset has 0"):
        await optimizer.acompile(student(), trainset=[])
    assert lm.calls == 0


async def test_several_proposals_per_iteration_are_evaluated_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gepa.strategies.proposal_sampling import SameParentSampling
    from gepa.strategies.proposal_selection import BestImprovement

    lm = ScriptedLM()
    optimizer = GEPA(
        feedback_metric,
        max_metric_calls=40,
        reflection_lm=lm,
        sampling_strategy=SameParentSampling(3),
        selection_strategy=BestImprovement(),
        track_stats=True,
    )
    sizes: list[int] = []
    original = DspyAdapter.batch_evaluate

    def spy(self: DspyAdapter, items: Any, **kwargs: Any) -> Any:
        sizes.append(len(items))
        return original(self, items, **kwargs)

    monkeypatch.setattr(DspyAdapter, "batch_evaluate", spy)
    with context(lm=lm):
        best = await optimizer.acompile(student(), trainset=dataset(9), valset=dataset(3, offset=50))
    assert 3 in sizes  # the three children of one iteration in one batch
    assert MAGIC in best.signature.instructions


async def test_auto_sets_dspys_metric_call_budget_at_compile() -> None:
    lm = ScriptedLM()
    optimizer = GEPA(feedback_metric, auto="light", reflection_lm=lm, max_lm_calls=10)
    with context(lm=lm):
        await optimizer.acompile(student(), trainset=dataset(4), valset=dataset(3, offset=20))
    assert optimizer.max_metric_calls == auto_budget(1, 6, 3)
