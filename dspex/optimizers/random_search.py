"""``BootstrapFewShotWithRandomSearch``: many bootstrapped demo sets, all evaluated at once, the best kept.

    optimizer = BootstrapFewShotWithRandomSearch(metric="numeric_equal:answer", num_candidate_programs=8)
    best = optimizer.compile(program, trainset=train, valset=val)
    optimizer.history.scores, optimizer.candidate_programs[0]["score"]

DSPy's candidate recipe, kept seed for seed: seed -3 is the zero-shot program, -2 labeled demos only
(LabeledFewShot), -1 BootstrapFewShot on the trainset as given, and seeds 0..N-1 BootstrapFewShot on
the trainset shuffled with ``random.Random(seed)`` and ``randint(1, max_bootstrapped_demos)`` demos.
``seed`` (ours; 0 reproduces DSPy's sets) changes the shuffles and sizes of seeds >= 0.

What differs: DSPy bootstraps and evaluates one candidate after another. Here every candidate's
bootstrap advances in the same waves, and then ALL candidates are evaluated on the valset in one
``executor.evaluate_many``. The best is picked in candidate order (the first of equal scores wins)
and ``stop_at_score`` is honoured as DSPy does: the first candidate reaching it ends the search, so
later candidates are not considered even though they were evaluated alongside.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dspex.errors import ConfigurationError
from dspex.evaluate import EvaluationResult
from dspex.lm.usage import Usage
from dspex.metrics import TraceMetric, resolve_metric
from dspex.optimizers._base import (
    Optimizer,
    OptimizerRun,
    StepCost,
    check_examples,
    check_int,
    check_labels,
    reject_unknown,
)
from dspex.optimizers.bootstrap import (
    BootstrapEngine,
    BootstrapSettings,
    BootstrapTask,
    check_teacher_settings,
    make_teacher,
)
from dspex.optimizers.budget import Budget
from dspex.optimizers.checkpoint import RandomSearchState
from dspex.optimizers.executor import Executor, LocalExecutor
from dspex.optimizers.history import Trial
from dspex.optimizers.labeled import labeled_program
from dspex.primitives import Example, Module
from dspex.serialization import candidate_id

__all__ = ["BootstrapFewShotWithRandomSearch", "CandidatePlan", "candidate_plans"]

Kind = Literal["zero-shot", "labeled", "bootstrap"]


@dataclass(frozen=True)
class CandidatePlan:
    """How one candidate is made: its DSPy seed, kind, trainset order and bootstrapped demo count."""

    seed: int
    kind: Kind
    order: tuple[int, ...]
    size: int

    @property
    def label(self) -> str:
        detail = f", {self.size} bootstrapped" if self.kind == "bootstrap" else ""
        return f"seed {self.seed}: {self.kind}{detail}"


def _rng(candidate_seed: int, seed: int) -> random.Random:
    # seed 0 is DSPy's recipe exactly; any other seed gives other, equally reproducible, sets.
    return random.Random(candidate_seed if seed == 0 else f"{seed}:{candidate_seed}")


def candidate_plans(
    num_candidates: int,
    train_size: int,
    max_bootstrapped: int,
    *,
    seed: int = 0,
    restrict: Collection[int] | None = None,
) -> list[CandidatePlan]:
    """The candidates of seeds -3..num_candidates-1 (only those in ``restrict`` when given)."""
    plans: list[CandidatePlan] = []
    unshuffled = tuple(range(train_size))
    for s in range(-3, num_candidates):
        if restrict is not None and s not in restrict:
            continue
        if s == -3:
            plans.append(CandidatePlan(s, "zero-shot", unshuffled, 0))
        elif s == -2:
            plans.append(CandidatePlan(s, "labeled", unshuffled, 0))
        elif s == -1:
            plans.append(CandidatePlan(s, "bootstrap", unshuffled, max_bootstrapped))
        else:
            order = list(unshuffled)
            _rng(s, seed).shuffle(order)
            size = _rng(s, seed).randint(1, max_bootstrapped)
            plans.append(CandidatePlan(s, "bootstrap", tuple(order), size))
    return plans


class BootstrapFewShotWithRandomSearch(Optimizer):
    """DSPy's ``BootstrapFewShotWithRandomSearch``, candidates evaluated concurrently, with budgets.

    ``num_threads`` / ``concurrency``: the bound of the default LocalExecutor (ignored when an
    executor is given).
    """

    def __init__(
        self,
        metric: TraceMetric | str,
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        num_candidate_programs: int = 16,
        num_threads: int | None = None,
        max_errors: int | None = None,
        stop_at_score: float | None = None,
        metric_threshold: float | None = None,
        *,
        concurrency: int | None = None,
        seed: int = 0,
        max_lm_calls: int | None = None,
        max_cost_usd: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        reject_unknown("BootstrapFewShotWithRandomSearch", unknown, BootstrapFewShotWithRandomSearch.__init__)
        self.metric = resolve_metric(metric)
        # DSPy's attributes, under DSPy's names.
        self.teacher_settings = dict(teacher_settings or {})
        self.max_rounds = max_rounds
        self.num_threads = num_threads
        self.stop_at_score = stop_at_score
        self.metric_threshold = metric_threshold
        self.min_num_samples = 1
        self.max_num_samples = max_bootstrapped_demos
        self.num_candidate_sets = num_candidate_programs
        self.max_labeled_demos = max_labeled_demos
        self.settings = BootstrapSettings(
            metric=self.metric,
            metric_threshold=metric_threshold,
            teacher_lm=check_teacher_settings(teacher_settings),
            max_bootstrapped_demos=check_int("max_bootstrapped_demos", max_bootstrapped_demos, minimum=1),
            max_labeled_demos=check_int("max_labeled_demos", max_labeled_demos),
            max_rounds=check_int("max_rounds", max_rounds, minimum=1),
        )
        self.num_candidate_programs = check_int("num_candidate_programs", num_candidate_programs)
        self.concurrency = LocalExecutor(concurrency, num_threads=num_threads).concurrency
        self.max_errors = check_int("max_errors", max_errors, optional=True)
        self.stop_at_score = stop_at_score
        self.seed = check_int("seed", seed, minimum=-(2**63))
        self._limits = Budget(max_lm_calls, max_cost_usd)
        self.candidate_programs: list[dict[str, Any]] = []

    def start(
        self,
        student: Module,
        *,
        trainset: Sequence[Example],
        teacher: Module | None = None,
        valset: Sequence[Example] | None = None,
        restrict: Iterable[int] | None = None,
        labeled_sample: bool = True,
        executor: Executor | None = None,
        state: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> _RandomSearchRun:
        """The run, checked and ready for its first step (or resumed from ``state``). Its result:
        the best candidate on ``valset`` (the trainset when not given, as in DSPy)."""
        reject_unknown(
            "BootstrapFewShotWithRandomSearch.compile", unknown, BootstrapFewShotWithRandomSearch.start
        )
        train, val = self._checked_sets(trainset, valset)
        plans = candidate_plans(
            self.num_candidate_programs,
            len(train),
            self.settings.max_bootstrapped_demos,
            seed=self.seed,
            restrict=_restrict(restrict, self.num_candidate_programs),
        )
        run = _RandomSearchRun(
            self,
            student,
            teacher,
            plans,
            train,
            val,
            labeled_sample=labeled_sample,
            executor=executor or LocalExecutor(self.concurrency),
        )
        if state is not None:
            run.load_state_dict(state)
        return run

    def _keep_from_run(self, run: OptimizerRun) -> None:
        if isinstance(run, _RandomSearchRun):
            self.candidate_programs = run.candidate_programs

    def _checked_sets(
        self, trainset: Sequence[Example], valset: Sequence[Example] | None
    ) -> tuple[list[Example], list[Example]]:
        train = check_examples("trainset", trainset)  # fewer than max_bootstrapped_demos: fine, as in DSPy
        check_labels("trainset", train, self.metric)
        val = train if valset is None else check_examples("valset", valset)
        check_labels("valset", val, self.metric)
        return train, val


def _restrict(restrict: Iterable[int] | None, num_candidates: int) -> set[int] | None:
    if restrict is None:
        return None
    chosen = set(restrict)  # once: a single-use iterator is read here and nowhere else
    if not chosen & set(range(-3, num_candidates)):
        raise ConfigurationError(
            f"restrict={sorted(chosen)} names no candidate seed in range(-3, {num_candidates}); "
            "no candidate program would be evaluated"
        )
    return chosen


class _RandomSearchRun(OptimizerRun):
    """Steps: bootstrap waves for every bootstrapped candidate together, then one evaluation of all."""

    state_model = RandomSearchState

    def __init__(
        self,
        optimizer: BootstrapFewShotWithRandomSearch,
        student: Module,
        teacher: Module | None,
        plans: list[CandidatePlan],
        trainset: list[Example],
        valset: list[Example],
        *,
        labeled_sample: bool,
        executor: Executor,
    ) -> None:
        limits = optimizer._limits
        budget = Budget(limits.max_lm_calls, limits.max_cost_usd)
        name = "BootstrapFewShotWithRandomSearch"
        super().__init__(name=name, executor=executor, budget=budget, max_errors=optimizer.max_errors)
        self.settings, self.stop_at_score = optimizer.settings, optimizer.stop_at_score
        self.student, self.plans, self.trainset, self.valset = student, plans, trainset, valset
        self.labeled_sample = labeled_sample
        self.tasks = {p.seed: self._task(p, teacher) for p in plans if p.kind == "bootstrap"}
        paths = [path for path, _ in student.named_predictors()]
        self.engine = BootstrapEngine(self.settings, list(self.tasks.values()), paths, executor)
        self.calls_per_run = float(len(paths))
        self.programs: list[Module] | None = None
        self.best_index: int | None = None
        self.candidate_programs: list[dict[str, Any]] = []

    def _task(self, plan: CandidatePlan, teacher: Module | None) -> BootstrapTask:
        examples = [self.trainset[i] for i in plan.order]
        teacher_program = make_teacher(self.student, teacher, examples, self.settings.max_labeled_demos)
        return BootstrapTask(examples, teacher_program, plan.size, self.settings.max_rounds)

    # -- steps -----------------------------------------------------------------------------------

    async def _step(self) -> StepCost:
        if not self.engine.done:
            cost = await self.engine.wave(self)
            if cost.runs == 0 and not self.engine.done:
                self.stop(self.budget.exhausted() or "budget: no room for another bootstrap run")
            return cost
        return await self._evaluate_all()

    async def _evaluate_all(self) -> StepCost:
        programs = self._built()
        size = len(self.valset)
        fit = self.budget_runs(len(programs) * size, self.calls_per_run) // size
        if fit == 0:
            self.stop(self.budget.exhausted() or "budget: no room to evaluate a candidate")
            return StepCost()
        results = await self.executor.evaluate_many(programs[:fit], self.valset, self.settings.metric)
        self._choose(results)
        if fit < len(programs) and self.history.stopped is None:
            self.history.stopped = f"budget: evaluated {fit} of {len(programs)} candidates"
        self.done = True
        return StepCost(runs=fit * size, reported=sum((r.usage for r in results), Usage()))

    def _choose(self, results: list[EvaluationResult]) -> None:
        """Record every trial in candidate order and pick the best, as DSPy's sequential loop would:
        of equal scores the first wins, and nothing after the first to reach ``stop_at_score`` counts."""
        considered = True
        for index, result in enumerate(results):
            self._record_candidate(index, result, considered)
            if considered and self.stop_at_score is not None and result.score >= self.stop_at_score:
                considered = False
                label = self.plans[index].label
                self.history.stopped = f"stop_at_score: {result.score:.2f} >= {self.stop_at_score} ({label})"
        self.candidate_programs.sort(key=lambda entry: entry["score"], reverse=True)
        worst = max(results, key=lambda r: r.errors)
        if worst.errors:
            # DSPy's Evaluate has max_errors per evaluation: one candidate past it fails the run.
            self.check_errors(worst.errors, _first_error(worst))

    def _record_candidate(self, index: int, result: EvaluationResult, considered: bool) -> None:
        plan, program = self.plans[index], self._built()[index]
        failed = result.processed > 0 and result.errors == result.processed
        previous = self.history.best_score
        trial = self.record(
            Trial(
                step=self.step_index,
                kind="full",
                label=plan.label,
                candidate_id=candidate_id(program),
                score=result.score if considered and not failed else None,
                num_examples=result.processed,
                note=None if considered else f"scored {result.score:.2f} after stop_at_score was reached",
                error=f"every example failed: {_first_error(result)}" if failed else None,
            )
        )
        if trial.score is not None and (previous is None or trial.score > previous):
            self.best_index = index
        subscores = [record.score for record in result.records]
        self.candidate_programs.append(
            {"score": result.score, "subscores": subscores, "seed": plan.seed, "program": program}
        )

    # -- programs --------------------------------------------------------------------------------

    def _built(self) -> list[Module]:
        if not self.engine.done:
            return [self._program(plan) for plan in self.plans]  # mid-run: the best so far, not kept
        if self.programs is None:
            self.programs = [self._program(plan) for plan in self.plans]
        return self.programs

    def _program(self, plan: CandidatePlan) -> Module:
        if plan.kind == "zero-shot":
            return self.student.reset_copy()
        if plan.kind == "labeled":
            return labeled_program(
                self.student, self.trainset, self.settings.max_labeled_demos, sample=self.labeled_sample
            )
        return self.tasks[plan.seed].student(self.student, self.settings)

    def _finish(self) -> None:
        for task in self.tasks.values():
            if not task.done:
                task.settle()
        self.programs = None

    def result(self) -> Module:
        programs = self._built()
        if self.best_index is not None:
            best = programs[self.best_index]
        else:
            # Stopped before any evaluation: what BootstrapFewShot alone would give (seed -1), if planned.
            best = next(
                (p for plan, p in zip(self.plans, programs, strict=True) if plan.seed == -1), programs[0]
            )
        best.candidate_programs = self.candidate_programs  # type: ignore[attr-defined]  # as DSPy attaches it
        return best

    # -- state -----------------------------------------------------------------------------------

    def _state(self) -> RandomSearchState:
        tasks = {seed: task.state() for seed, task in self.tasks.items()}
        return RandomSearchState(tasks=tasks, best=self.best_index)

    def _load_state(self, state: RandomSearchState) -> None:
        if set(state.tasks) != set(self.tasks):
            raise ConfigurationError(
                f"this optimizer checkpoint bootstraps candidate seeds {sorted(state.tasks)}; "
                f"this run's are {sorted(self.tasks)}"
            )
        for seed, task_state in state.tasks.items():
            self.tasks[seed].load(task_state)
        self.best_index = state.best
        self.programs = None


def _first_error(result: EvaluationResult) -> str:
    return next(iter(result.error_messages.values()), "unknown error")
