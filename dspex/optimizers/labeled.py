"""``LabeledFewShot``: training examples, as they are, become every predictor's demos.

    program = LabeledFewShot(k=8).compile(dspex.Predict("question -> answer"), trainset=train)

As in DSPy: each predictor gets ``k`` examples sampled with ``random.Random(0)`` (one generator for
all predictors, in predictor order), or the first ``k`` with ``sample=False``. No LM call is made,
unless a ``valset`` is given: the program is then evaluated on it once, for the history.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.metrics import MetricLike, resolve_metric
from dspex.optimizers._base import (
    Optimizer,
    OptimizerRun,
    StepCost,
    check_examples,
    check_int,
    check_labels,
    reject_unknown,
)
from dspex.optimizers.budget import Budget
from dspex.optimizers.checkpoint import LabeledState
from dspex.optimizers.executor import Executor
from dspex.optimizers.history import Trial
from dspex.primitives import Example, Module
from dspex.serialization import candidate_id

__all__ = ["LabeledFewShot", "labeled_program"]


def labeled_program(student: Module, trainset: Sequence[Example], k: int, *, sample: bool = True) -> Module:
    """A reset copy of ``student`` whose predictors carry ``k`` training examples as demos."""
    program = student.reset_copy()
    if not trainset:
        return program
    rng = random.Random(0)
    count = min(k, len(trainset))
    for predictor in program.predictors():
        predictor.demos = rng.sample(list(trainset), count) if sample else list(trainset[:count])
    return program


class LabeledFewShot(Optimizer):
    """DSPy's ``LabeledFewShot(k=16)``: ``k`` labeled demos per predictor."""

    def __init__(
        self,
        k: int = 16,
        *,
        max_lm_calls: int | None = None,
        max_cost_usd: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        reject_unknown("LabeledFewShot", unknown, LabeledFewShot.__init__)
        self.k = check_int("k", k, minimum=0)  # DSPy takes k=0: no demos
        self._budget = Budget(max_lm_calls, max_cost_usd)

    def start(
        self,
        student: Module,
        *,
        trainset: Sequence[Example],
        sample: bool = True,
        valset: Sequence[Example] | None = None,
        metric: MetricLike | None = None,
        executor: Executor | None = None,
        state: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> OptimizerRun:
        """The run, checked and ready for its first step (or resumed from ``state``). Its result:
        ``student`` with labeled demos; with ``valset`` and ``metric``, also evaluated once (a
        valset without a metric is not used)."""
        reject_unknown("LabeledFewShot.compile", unknown, LabeledFewShot.start)
        # Empty: the student, reset (DSPy). Demos need their fields, not input marks (DSPy's too).
        train = check_examples("trainset", trainset, minimum=0, inputs_marked=False)
        # A valset is scored only with a metric; without one it is unused (DSPy's compile takes none,
        # and a caller offering every optimizer the same keywords, as BetterTogether does, may give it).
        val = None if valset is None or metric is None else check_examples("valset", valset)
        resolved = None
        if val is not None and metric is not None:
            resolved = resolve_metric(metric)
            check_labels("valset", val, resolved)
        budget = Budget(self._budget.max_lm_calls, self._budget.max_cost_usd)
        run = _LabeledRun(
            labeled_program(student, train, self.k, sample=sample),
            val,
            resolved,
            executor=self.executor_or_default(executor),
            budget=budget,
        )
        if state is not None:
            run.load_state_dict(state)
        return run


class _LabeledRun(OptimizerRun):
    """Zero steps without a valset; one evaluation step with one."""

    state_model = LabeledState

    def __init__(
        self,
        program: Module,
        valset: list[Example] | None,
        metric: Any,
        *,
        executor: Executor,
        budget: Budget,
    ) -> None:
        super().__init__(name="LabeledFewShot", executor=executor, budget=budget, max_errors=None)
        self.program, self.valset, self.metric = program, valset, metric
        if valset is None:
            self.done = True

    async def _step(self) -> StepCost:
        if self.valset is None:  # never: a run without a valset starts done
            self.done = True
            return StepCost()
        [result] = await self.executor.evaluate_many([self.program], self.valset, self.metric)
        self.record(
            Trial(
                step=self.step_index,
                kind="full",
                label="labeled",
                candidate_id=candidate_id(self.program),
                score=result.score,
                num_examples=result.processed,
            )
        )
        self.done = True
        return StepCost(runs=len(self.valset), reported=result.usage)

    def _finish(self) -> None:
        pass

    def result(self) -> Module:
        return self.program

    def _state(self) -> LabeledState:
        return LabeledState()

    def _load_state(self, state: LabeledState) -> None:
        pass
