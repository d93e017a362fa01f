"""Custom modules composing predictors: traces in order, paths, nesting, concurrency, sync forward."""

from __future__ import annotations

import asyncio

import pytest
from dspex_example_programs import AsyncTwoStep, Fanout, ScriptedAdapter, SyncTwoStep, offline_lm

from dspex.configuration import context
from dspex.primitives import Module, Prediction


def _steps(pred: Prediction) -> list[tuple[str, dict[str, object]]]:
    return [(step.predictor_path, step.inputs) for step in pred.trace]


@pytest.mark.parametrize("program_class", [AsyncTwoStep, SyncTwoStep])
async def test_two_step_trace_has_both_steps_in_order(program_class: type[Module]) -> None:
    program = program_class()
    with context(lm=offline_lm(), adapter=ScriptedAdapter()):
        pred = await program.acall(question="2 + 3")
    assert pred.answer == "answer(2 + 3,answer(2 + 3))"
    assert _steps(pred) == [
        ("draft.predict", {"question": "2 + 3"}),
        ("check", {"question": "2 + 3", "draft": "answer(2 + 3)"}),
    ]
    assert pred.trace[0].predictor is program.draft.predict  # type: ignore[attr-defined]
    assert pred.trace[0].outputs == {"reasoning": "reasoning(2 + 3)", "answer": "answer(2 + 3)"}


def test_sync_forward_from_plain_sync_code() -> None:
    with context(lm=offline_lm(), adapter=ScriptedAdapter()):
        pred = SyncTwoStep()(question="q")
    assert [path for path, _ in _steps(pred)] == ["draft.predict", "check"]


async def test_paths_through_lists_dicts_and_nested_modules() -> None:
    with context(lm=offline_lm(), adapter=ScriptedAdapter()):
        pred = await Fanout().acall(question="q")
    assert [path for path, _ in _steps(pred)] == [
        "steps[0]",
        "by_name['summary']",
        "inner.draft.predict",
        "inner.check",
    ]


async def test_a_nested_call_returns_its_own_trace_and_the_outer_gets_everything() -> None:
    inner_traces: list[list[str]] = []

    class Outer(Module):
        def __init__(self) -> None:
            self.first = AsyncTwoStep()
            self.second = AsyncTwoStep()

        async def aforward(self, question: str) -> Prediction:
            one = await self.first.acall(question=question)
            two = await self.second.acall(question=one.answer)
            inner_traces.extend(
                [[s.predictor_path for s in one.trace], [s.predictor_path for s in two.trace]]
            )
            return two

    with context(lm=offline_lm(), adapter=ScriptedAdapter()):
        pred = await Outer().acall(question="q")
    # Inner results name paths in the outermost program, and hold only their own steps.
    assert inner_traces == [["first.draft.predict", "first.check"], ["second.draft.predict", "second.check"]]
    assert [s.predictor_path for s in pred.trace] == [*inner_traces[0], *inner_traces[1]]


async def test_gathered_calls_keep_their_traces_apart() -> None:
    program = AsyncTwoStep()
    questions = [f"q{i}" for i in range(100)]
    with context(lm=offline_lm(), adapter=ScriptedAdapter()):
        preds = await asyncio.gather(*(program.acall(question=q) for q in questions))
    for question, pred in zip(questions, preds, strict=True):
        assert [step.inputs["question"] for step in pred.trace] == [question, question]


async def test_gathered_sub_calls_inside_one_call_all_land_in_its_trace() -> None:
    class Parallel(Module):
        def __init__(self) -> None:
            self.steps = [AsyncTwoStep() for _ in range(5)]

        async def aforward(self, question: str) -> Prediction:
            preds = await asyncio.gather(
                *(step.acall(question=f"{question}{i}") for i, step in enumerate(self.steps))
            )
            return Prediction(answers=[p.answer for p in preds])

    with context(lm=offline_lm(), adapter=ScriptedAdapter()):
        pred = await Parallel().acall(question="q")
    assert len(pred.trace) == 10
    assert sorted({s.predictor_path.split(".")[0] for s in pred.trace}) == [f"steps[{i}]" for i in range(5)]


async def test_sync_call_of_a_sub_module_inside_aforward_works_and_joins_the_trace() -> None:
    # Blocking (the loop waits for the sub-call, which runs on dspex's bridge loop) but correct:
    # settings and the trace travel with it, as in a notebook cell.
    class Blocking(Module):
        def __init__(self) -> None:
            self.inner = AsyncTwoStep()

        async def aforward(self, question: str) -> Prediction:
            return self.inner(question=question)

    with context(lm=offline_lm(), adapter=ScriptedAdapter()):
        pred = await Blocking().acall(question="q")
    assert pred.answer == "answer(q,answer(q))"
    assert [path for path, _ in _steps(pred)] == ["inner.draft.predict", "inner.check"]


class _Plain(Module):
    def forward(self, x: int) -> int:
        return x + 1


async def test_forward_may_return_something_else_untouched() -> None:
    assert await _Plain().acall(x=1) == 2  # type: ignore[comparison-overlap]


def test_positional_arguments_reach_a_custom_forward() -> None:
    assert _Plain()(1) == 2  # type: ignore[comparison-overlap]
