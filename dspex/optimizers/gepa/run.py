"""GEPA's step-by-step run: the seed's evaluation, then one gepa iteration per step.

    run = optimizer.start(program, trainset=train, valset=val)      # or state=checkpoint
    while not run.done:
        await run.step()
        checkpoint = run.state_dict()                               # JSON, after every round
    best = run.result()

Each step runs in a worker thread (gepa's engine is sync; its dspex calls come back to the event
loop, see :mod:`dspex._sync`): step 1 evaluates the seed candidate on the valset, every later step
is one iteration of gepa's loop (:mod:`.engine`). Between steps :meth:`GEPARun.state_dict` holds
everything the next iteration draws from (:mod:`.checkpoint`), so a run resumed from the checkpoint
of round k does what the uninterrupted run did from round k on: a worker killed mid-round loses
that round only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gepa.core.result import GEPAResult

from dspex._sync import run_in_thread
from dspex.lm.usage import Usage, UsageTracker, track_usage
from dspex.optimizers._base import OptimizerRun, StepCost
from dspex.optimizers.budget import Budget
from dspex.optimizers.executor import Executor, LocalExecutor
from dspex.optimizers.gepa._collector import older_objects_set_aside
from dspex.optimizers.gepa.adapter import BudgetStop
from dspex.optimizers.gepa.budgets import SpendStopper
from dspex.optimizers.gepa.checkpoint import GEPARunState, save_run_file
from dspex.optimizers.gepa.engine import (
    EngineParts,
    build_engine,
    evaluate_seed,
    run_iteration,
    should_stop,
)
from dspex.optimizers.history import Trial
from dspex.primitives import Example, Module
from dspex.serialization import candidate_id

if TYPE_CHECKING:
    from dspex.optimizers.gepa.gepa import GEPA

__all__ = ["GEPARun"]

logger = logging.getLogger(__name__)


class GEPARun(OptimizerRun):
    """One GEPA optimization in progress (see the module); built by :meth:`GEPA.start`."""

    def __init__(
        self,
        optimizer: GEPA,
        student: Module,
        trainset: Sequence[Example],
        valset: Sequence[Example],
        executor: Executor | None,
        *,
        max_metric_calls: int,
    ) -> None:
        limits = optimizer._limits
        super().__init__(
            name="GEPA",
            # None: the adapter makes one LocalExecutor per evaluation, bounded by its share of
            # num_threads when several candidates are evaluated together
            executor=executor or LocalExecutor(optimizer.num_threads),
            budget=Budget(limits.max_lm_calls, limits.max_cost_usd),
            max_errors=None,
        )
        self.optimizer = optimizer
        self.max_metric_calls = max_metric_calls
        self.spend = _LiveSpend(self)
        self.adapter = optimizer._adapter(student, executor, self.spend)
        self.seed_candidate = _instructions(student)
        self.parts: EngineParts = build_engine(
            optimizer._engine_settings(max_metric_calls),
            adapter=self.adapter,
            seed_candidate=self.seed_candidate,
            trainset=trainset,
            valset=valset,
            stoppers=[self.spend],
            callbacks=[_Observer(self)],
            logger=_GepaLog(),
        )
        self.gepa_state: Any = None

    async def step(self) -> None:
        """The next round; with the optimizer's ``log_dir``, the checkpoint is written there after it."""
        await super().step()
        if self.optimizer.log_dir is not None:  # (a checkpoint costs a dump of gepa's whole state)
            save_run_file(self.optimizer.log_dir, self.state_dict())

    async def _step(self) -> StepCost:
        self.spend.begin_step()
        calls_before = self._metric_calls()
        try:
            with track_usage(self.spend.local), older_objects_set_aside():
                finished = await run_in_thread(self._advance)
        except BudgetStop as stop:
            # the evaluation that reached the cap is dropped; the best so far stands
            self.stop(str(stop))
            finished = False
        if finished:
            self.history.stopped = self.spend.exhausted()
            self._finish()
            self.done = True
        return StepCost(runs=self._metric_calls() - calls_before, reported=self.spend.remote.usage)

    def _advance(self) -> bool:
        """The next round, in gepa's thread; True when gepa's stop condition now holds."""
        if self.gepa_state is None:
            self.gepa_state = evaluate_seed(self.parts)
        else:
            run_iteration(self.parts, self.gepa_state)
        return should_stop(self.parts, self.gepa_state)

    def _metric_calls(self) -> int:
        return 0 if self.gepa_state is None else int(self.gepa_state.total_num_evals)

    def _finish(self) -> None:
        """Nothing to build: :meth:`result` reads the best candidate from gepa's state."""

    def gepa_result(self) -> GEPAResult[Any, Any] | None:
        """gepa's view of the run so far (None before the seed was evaluated)."""
        if self.gepa_state is None:
            return None
        return GEPAResult.from_state(
            self.gepa_state, run_dir=self.optimizer.log_dir, seed=self.optimizer.seed
        )

    def result(self) -> Module:
        """The candidate with the best valset score so far (the student before any)."""
        result = self.gepa_result()
        if result is None:
            return self.adapter.build_program(self.seed_candidate)
        program = self.adapter.build_program(result.candidates[result.best_idx])
        if self.optimizer.track_stats:
            from dspex.optimizers.gepa.gepa import DspyGEPAResult

            program.detailed_results = DspyGEPAResult.from_gepa_result(result, self.adapter)  # type: ignore[attr-defined]
        return program

    # -- state -----------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        saved = GEPARunState.capture(
            self.parts, self.gepa_state, self.adapter, max_metric_calls=self.max_metric_calls
        )
        return saved.to_dict()

    def _load_state(self, state: Mapping[str, Any]) -> None:
        saved = GEPARunState.from_dict(state)
        self.gepa_state = saved.restore(self.parts, self.adapter)


class _LiveSpend(SpendStopper):
    """The LM-call / USD cap as gepa's stop condition and the adapter's gate: what earlier steps
    spent (the run's budget) plus this step's calls, here and (remote executor) on the workers."""

    def __init__(self, run: GEPARun) -> None:
        super().__init__(run.budget, UsageTracker())
        self.run = run
        self.local = UsageTracker()
        self.remote = UsageTracker()

    def begin_step(self) -> None:
        self.local, self.remote = UsageTracker(), UsageTracker()

    @property
    def capped(self) -> bool:
        budget = self.run.budget
        return budget.max_lm_calls is not None or budget.max_cost_usd is not None

    def exhausted(self) -> str | None:
        budget = self.run.budget
        if budget.max_lm_calls is None and budget.max_cost_usd is None:
            return None  # (asked before every run: no sums to make without a cap)
        spent = budget.spent + self.local.usage + self.remote.usage
        return Budget(budget.max_lm_calls, budget.max_cost_usd, spent=spent).exhausted()

    def add_remote(self, usage: Usage) -> None:
        self.remote.add(usage)


class _GepaLog:
    """gepa's logger protocol, onto this module's logger (gepa logs a line per step)."""

    def log(self, message: str) -> None:
        logger.info("%s", message)


class _Observer:
    """A gepa callback: each candidate's valset evaluation becomes a trial of the run's history."""

    def __init__(self, run: GEPARun) -> None:
        self.run = run

    def on_valset_evaluated(self, event: Any) -> None:
        parents = ", ".join(str(p) for p in event["parent_ids"] if p is not None)
        label = f"candidate {event['candidate_idx']}" + (f" (from {parents})" if parents else " (seed)")
        program = self.run.adapter.build_program(event["candidate"])
        self.run.record(
            Trial(
                step=int(event["iteration"]),
                kind="full",
                label=label,
                candidate_id=candidate_id(program),
                # gepa averages the metric (0-1); dspex's trials are percentages like Evaluate's
                score=100.0 * float(event["average_score"]),
                num_examples=int(event["num_examples_evaluated"]),
            )
        )


def _instructions(program: Module) -> dict[str, str]:
    return {name: predictor.signature.instructions for name, predictor in program.named_predictors()}
