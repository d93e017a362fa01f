"""``BootstrapFewShot``: the teacher's traces that pass the metric become the student's demos.

    optimizer = BootstrapFewShot(metric=dspex.metrics.numeric_equal("answer"), max_bootstrapped_demos=4)
    program = optimizer.compile(dspex.ChainOfThought("question -> answer"), trainset=train)

DSPy's meaning, kept: the teacher (a copy of the student unless given) gets up to
``max_labeled_demos`` training examples as demos; it runs on the training examples in order, each
without itself among its demos; a run whose prediction passes the metric (``metric_threshold`` for
numeric metrics) gives one demo per predictor from its trace, inputs and outputs (``augmented=True``).
An example that fails is retried up to ``max_rounds`` times, round ``r > 0`` a fresh rollout
(``rollout_id=r`` at temperature 1.0). The first ``max_bootstrapped_demos`` examples that pass are
kept; every other training example is a raw (labeled) demo candidate, ``random.Random(0)`` picks up
to ``max_labeled_demos`` minus the bootstrapped ones for each predictor. A teacher run or metric call
that raises is an error of its bootstrap; the one that brings the count to ``max_errors`` (None:
``dspex.settings.max_errors``) is raised as it is. The compiled program has ``_compiled = True``
(a teacher so marked is used as it is) and its bootstrapped demos are Examples with
``augmented=True``.

What differs: the examples are not run one after another but in *waves*, all the attempts of a wave
at once through the executor (sized from the success rate so far); the result is the same, since
each example's outcome does not depend on the others. :class:`BootstrapTask` is one such bootstrap,
with a checkpoint model of its state; BootstrapFewShotWithRandomSearch runs many of them in the same waves.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_jsonable_python

from dspex.errors import ConfigurationError
from dspex.ids import content_id
from dspex.lm import LM, Usage
from dspex.metrics import TraceMetric, resolve_metric, score_of
from dspex.optimizers._base import (
    Optimizer,
    OptimizerRun,
    StepCost,
    check_examples,
    check_int,
    check_labels,
    check_structure,
    reject_unknown,
)
from dspex.optimizers.budget import Budget
from dspex.optimizers.checkpoint import BootstrapState, BootstrapTaskState
from dspex.optimizers.executor import Executor
from dspex.optimizers.history import Trial
from dspex.optimizers.labeled import labeled_program
from dspex.primitives import Example, Module, Prediction
from dspex.serialization import candidate_id

__all__ = ["BootstrapEngine", "BootstrapFewShot", "BootstrapSettings", "BootstrapTask", "make_teacher"]

# A guess of the pass rate before anything was measured, and the lowest one a wave is sized for.
_MIN_RATE = 0.25


@dataclass(frozen=True)
class BootstrapSettings:
    """The knobs a bootstrap runs with (shared by every task of an engine)."""

    metric: Any
    metric_threshold: float | None
    teacher_lm: LM | None
    max_bootstrapped_demos: int
    max_labeled_demos: int
    max_rounds: int


def make_teacher(
    student: Module, teacher: Module | None, trainset: Sequence[Example], max_labeled: int
) -> Module:
    """The teacher a bootstrap runs: given or the student, with labeled demos unless compiled.

    As in DSPy: a copy of the teacher (of the student when None); one marked as compiled
    (``_compiled``, what an optimizer's compile sets) is kept as it is, any other gets ``max_labeled``
    labeled demos (LabeledFewShot on a reset copy).
    """
    base = (teacher or student).deepcopy()
    if teacher is not None:
        check_structure(student, teacher)
    compiled = bool(getattr(base, "_compiled", False))
    if max_labeled and not compiled:
        return labeled_program(base, trainset, max_labeled)
    return base


def _without(teacher: Module, example: Example) -> Module:
    """The teacher without ``example`` among its demos (a copy only when it had it)."""
    if not any(example in p.demos for p in teacher.predictors()):
        return teacher
    copied = teacher.deepcopy()
    for predictor in copied.predictors():
        predictor.demos = [demo for demo in predictor.demos if demo != example]
    return copied


def _demos_from_trace(prediction: Prediction, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One demo per predictor from a passing run's trace (DSPy picks among repeated steps at random,
    seeded by their content: here too, so the choice is the same every run)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for step in prediction.trace:
        if step.predictor_path in paths:
            demo = to_jsonable_python({"augmented": True, **step.inputs, **step.outputs})
            found.setdefault(step.predictor_path, []).append(demo)
    chosen: dict[str, dict[str, Any]] = {}
    for path, demos in found.items():
        if len(demos) > 1:
            rng = random.Random(content_id(demos))
            chosen[path] = rng.choice(demos[:-1]) if rng.random() < 0.5 else demos[-1]
        else:
            chosen[path] = demos[0]
    return chosen


class BootstrapTask:
    """One bootstrap in progress: which examples were opened, tried, passed and kept.

    Positions index ``examples`` (the trainset in this task's order). Examples are opened in
    windows; an outcome is final once it passed or used up its rounds; final outcomes are committed
    in order, as DSPy's sequential loop would take them, until enough demos are kept.
    """

    def __init__(
        self, examples: Sequence[Example], teacher: Module, max_bootstraps: int, max_rounds: int
    ) -> None:
        self.examples, self.teacher = list(examples), teacher
        self.max_bootstraps, self.max_rounds = max_bootstraps, max_rounds
        self.opened = 0  # positions [0, opened) may be attempted
        self.committed = 0  # positions [0, committed) are decided
        self.rounds: dict[int, int] = {}  # position -> next round to try
        self.passed: dict[int, dict[str, dict[str, Any]]] = {}  # position -> demos by predictor path
        self.failed: set[int] = set()
        self.accepted: list[int] = []
        self.attempts = 0
        self.errors = 0  # runs or metric calls that raised (DSPy counts them per bootstrap)
        self.done = max_bootstraps == 0 or not self.examples

    def pending(self) -> list[tuple[int, int]]:
        """``(position, round)`` of the next attempts, opening a new window when the last is decided."""
        if self.done:
            return []
        if self.committed == self.opened:
            self._open_window()
        return [
            (pos, self.rounds.get(pos, 0)) for pos in range(self.committed, self.opened) if self._open(pos)
        ]

    def _open(self, position: int) -> bool:
        return position not in self.passed and position not in self.failed

    def _open_window(self) -> None:
        needed = self.max_bootstraps - len(self.accepted)
        rate = len(self.passed) / self.attempts if self.attempts else 1.0
        size = math.ceil(needed / max(rate, _MIN_RATE))
        self.opened = min(len(self.examples), self.opened + size)

    def teacher_for(self, position: int) -> Module:
        return _without(self.teacher, self.examples[position])

    def record(self, position: int, demos: dict[str, dict[str, Any]] | None) -> None:
        """The outcome of one attempt: demos when it passed, None when it failed or raised."""
        self.attempts += 1
        if demos is not None:
            self.passed[position] = demos
        else:
            self.rounds[position] = self.rounds.get(position, 0) + 1
            if self.rounds[position] >= self.max_rounds:
                self.failed.add(position)
        self._commit()

    def _commit(self) -> None:
        while not self.done and self.committed < self.opened and not self._open(self.committed):
            if self.committed in self.passed:
                self.accepted.append(self.committed)
            self.committed += 1
            self.done = len(self.accepted) >= self.max_bootstraps or self.committed == len(self.examples)

    def settle(self) -> None:
        """Stopped early: keep the passed examples of the open window too (skipping undecided ones)."""
        for position in range(self.committed, self.opened):
            if position in self.passed and len(self.accepted) < self.max_bootstraps:
                self.accepted.append(position)
        self.done = True

    def student(self, student: Module, settings: BootstrapSettings) -> Module:
        """DSPy's ``_train``: bootstrapped demos first, then raw examples sampled with Random(0);
        the program is marked compiled (``_compiled = True``), as DSPy's compile marks it."""
        kept = set(self.accepted)
        raw = [ex for pos, ex in enumerate(self.examples) if pos not in kept]
        random.Random(0).shuffle(raw)
        rng = random.Random(0)
        program = student.reset_copy()
        for path, predictor in program.named_predictors():
            traces = [Example(self.passed[pos][path]) for pos in self.accepted if path in self.passed[pos]]
            augmented = traces[: settings.max_bootstrapped_demos]
            size = max(0, min(settings.max_labeled_demos - len(augmented), len(raw)))
            predictor.demos = augmented + rng.sample(raw, size)
        program._compiled = True  # DSPy's flag: a teacher used as is
        return program

    def state(self) -> BootstrapTaskState:
        return BootstrapTaskState(
            opened=self.opened,
            committed=self.committed,
            rounds=self.rounds,
            passed=self.passed,
            failed=sorted(self.failed),
            accepted=self.accepted,
            attempts=self.attempts,
            errors=self.errors,
            done=self.done,
        )

    def load(self, state: BootstrapTaskState) -> None:
        self.opened, self.committed = state.opened, state.committed
        self.rounds, self.passed = dict(state.rounds), dict(state.passed)
        self.failed, self.accepted = set(state.failed), list(state.accepted)
        self.attempts, self.errors, self.done = state.attempts, state.errors, state.done


class BootstrapEngine:
    """Runs the waves of one or more bootstrap tasks: each wave is one step of the optimizer."""

    def __init__(
        self,
        settings: BootstrapSettings,
        tasks: Sequence[BootstrapTask],
        paths: Sequence[str],
        executor: Executor,
    ) -> None:
        self.settings, self.tasks, self.paths, self.executor = settings, list(tasks), list(paths), executor

    @property
    def done(self) -> bool:
        return all(task.done for task in self.tasks)

    async def wave(self, run: OptimizerRun) -> StepCost:
        """Run every task's pending attempts at once (as many as the budget allows) and record them."""
        wanted = [(t, pos, rnd) for t, task in enumerate(self.tasks) for pos, rnd in task.pending()]
        attempts = wanted[: run.budget_runs(len(wanted), len(self.paths))]
        if not attempts:
            return StepCost()
        by_round: dict[int, list[tuple[int, int, int]]] = {}
        for attempt in attempts:
            by_round.setdefault(attempt[2], []).append(attempt)
        outcomes = await asyncio.gather(
            *(self._run_round(rnd, group) for rnd, group in sorted(by_round.items()))
        )
        results = [item for group in outcomes for item in group]
        await self._record(run, results)
        # Remote runs' LM calls come back in the predictions (charged for a remote executor only).
        usage = sum((pred.usage for _, _, pred in results if isinstance(pred, Prediction)), Usage())
        return StepCost(runs=len(attempts), reported=usage)

    async def _run_round(self, rnd: int, group: list[tuple[int, int, int]]) -> list[tuple[int, int, Any]]:
        programs = [self.tasks[t].teacher_for(pos) for t, pos, _ in group]
        examples = [self.tasks[t].examples[pos] for t, pos, _ in group]
        rollout = rnd if rnd > 0 else None
        preds = await self.executor.run(programs, examples, rollout_id=rollout, lm=self.settings.teacher_lm)
        return [(t, pos, pred) for (t, pos, _), pred in zip(group, preds, strict=True)]

    async def _record(self, run: OptimizerRun, results: list[tuple[int, int, Any]]) -> None:
        """Judge each result in order. As in DSPy, a run or metric call that raises counts as an
        error of its bootstrap; the one that brings a bootstrap to ``max_errors`` errors is raised
        (the wave is recorded in the history first)."""
        errors: list[str] = []
        fatal: Exception | None = None
        passed = 0
        for t, pos, pred in sorted(results, key=lambda r: (r[0], r[1])):
            task = self.tasks[t]
            demos, exc = await self._judge(task.examples[pos], pred)
            if exc is not None:
                errors.append(f"{type(exc).__name__}: {exc}")
                task.errors += 1
                if fatal is None and task.errors >= run.max_errors:
                    fatal = exc
            passed += demos is not None
            task.record(pos, demos)
        run.errors += len(errors)
        note = f"{passed} of {len(results)} runs passed; " + ", ".join(
            f"{len(task.accepted)}/{task.max_bootstraps}" for task in self.tasks
        )
        failed_all = bool(results) and len(errors) == len(results)
        run.record(
            Trial(
                step=run.step_index,
                kind="bootstrap",
                label="bootstrap wave",
                num_examples=len(results),
                note=note,
                error=f"every run failed: {errors[0]}" if failed_all else None,
            )
        )
        if fatal is not None:
            reason = f"a bootstrap reached max_errors={run.max_errors}; last: {type(fatal).__name__}: {fatal}"
            run.history.stopped = f"failed: {reason}"
            fatal.add_note(f"{run.history.optimizer}: {reason}")
            raise fatal

    async def _judge(
        self, example: Example, pred: Any
    ) -> tuple[dict[str, dict[str, Any]] | None, Exception | None]:
        """Demos from a passing run; None and the exception for a run or metric call that raised."""
        if isinstance(pred, Exception):
            return None, pred
        if self.settings.metric is not None:
            try:
                value = self.settings.metric(example, pred, pred.trace)
                score, _ = score_of(await value if inspect.isawaitable(value) else value)
            except Exception as exc:
                return None, exc
            # DSPy's rule: a (truthy) threshold is compared with, else the value must be truthy.
            threshold = self.settings.metric_threshold
            if not (score >= threshold if threshold else bool(score)):
                return None, None
        return _demos_from_trace(pred, self.paths), None

    def state(self) -> list[BootstrapTaskState]:
        return [task.state() for task in self.tasks]

    def load(self, state: Sequence[BootstrapTaskState]) -> None:
        if len(state) != len(self.tasks):
            raise ConfigurationError(
                f"this optimizer checkpoint has {len(state)} bootstrap(s); this run makes {len(self.tasks)}"
            )
        for task, task_state in zip(self.tasks, state, strict=True):
            task.load(task_state)


def check_teacher_settings(teacher_settings: Mapping[str, Any] | None) -> LM | None:
    """DSPy's ``teacher_settings`` (a settings context for teacher runs): here only ``lm`` is known."""
    settings = dict(teacher_settings or {})
    unknown = sorted(set(settings) - {"lm"})
    if unknown:
        raise ConfigurationError(f"teacher_settings: unknown key(s) {unknown}; accepted: lm")
    lm = settings.get("lm")
    if lm is not None and not isinstance(lm, LM):
        raise ConfigurationError(f"teacher_settings['lm'] must be a dspex.LM, got {type(lm).__name__}")
    return lm


class BootstrapFewShot(Optimizer):
    """DSPy's ``BootstrapFewShot``, with budgets (``max_lm_calls``, ``max_cost_usd``).

    ``max_errors`` (None: ``dspex.settings.max_errors``) as in DSPy: teacher runs and metric calls
    that raise are counted, and the one that brings the count to ``max_errors`` is raised.
    """

    def __init__(
        self,
        metric: TraceMetric | str | None = None,
        metric_threshold: float | None = None,
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        max_errors: int | None = None,
        *,
        max_lm_calls: int | None = None,
        max_cost_usd: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        reject_unknown("BootstrapFewShot", unknown, BootstrapFewShot.__init__)
        self.metric = None if metric is None else resolve_metric(metric)
        self.metric_threshold = metric_threshold
        self.teacher_settings = {} if teacher_settings is None else teacher_settings
        self.max_bootstrapped_demos = check_int("max_bootstrapped_demos", max_bootstrapped_demos)
        self.max_labeled_demos = check_int("max_labeled_demos", max_labeled_demos)
        self.max_rounds = check_int("max_rounds", max_rounds, minimum=1)
        self.max_errors = check_int("max_errors", max_errors, optional=True)
        self.error_count = 0  # errors of the last compile (DSPy's attribute)
        self.settings = BootstrapSettings(
            metric=self.metric,
            metric_threshold=metric_threshold,
            teacher_lm=check_teacher_settings(teacher_settings),
            max_bootstrapped_demos=self.max_bootstrapped_demos,
            max_labeled_demos=self.max_labeled_demos,
            max_rounds=self.max_rounds,
        )
        self._limits = Budget(max_lm_calls, max_cost_usd)

    def start(
        self,
        student: Module,
        *,
        trainset: Sequence[Example],
        teacher: Module | None = None,
        valset: Sequence[Example] | None = None,
        executor: Executor | None = None,
        state: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> OptimizerRun:
        """The run, checked and ready for its first step (or resumed from ``state``). Its result:
        the student with bootstrapped and labeled demos; with a ``valset``, evaluated once (for the
        history; DSPy does not)."""
        reject_unknown("BootstrapFewShot.compile", unknown, BootstrapFewShot.start)
        train, val = self._checked_sets(trainset, valset)
        run = self.unchecked_run(student, train, teacher, val, self.executor_or_default(executor))
        if state is not None:
            run.load_state_dict(state)
        return run

    def _keep_from_run(self, run: OptimizerRun) -> None:
        self.error_count = run.errors

    def unchecked_run(
        self,
        student: Module,
        trainset: list[Example],
        teacher: Module | None,
        valset: list[Example] | None,
        executor: Executor,
    ) -> OptimizerRun:
        """A run over a trainset checked by the caller (KNNFewShot bootstraps on a few neighbours,
        fewer than ``max_bootstrapped_demos`` being fine there, as in DSPy)."""
        teacher_program = make_teacher(student, teacher, trainset, self.settings.max_labeled_demos)
        check_structure(student, teacher_program)
        settings = self.settings
        task = BootstrapTask(trainset, teacher_program, settings.max_bootstrapped_demos, settings.max_rounds)
        budget = Budget(self._limits.max_lm_calls, self._limits.max_cost_usd)
        return _BootstrapRun(self, student, task, valset, executor=executor, budget=budget)

    def _checked_sets(
        self, trainset: Sequence[Example], valset: Sequence[Example] | None
    ) -> tuple[list[Example], list[Example] | None]:
        # Fewer examples than max_bootstrapped_demos is fine, as in DSPy: fewer demos come out.
        train = check_examples("trainset", trainset)
        if self.metric is not None:
            check_labels("trainset", train, self.metric)
        if valset is None:
            return train, None
        if self.metric is None:
            raise ConfigurationError("BootstrapFewShot.compile: a valset needs a metric to score it with")
        val = check_examples("valset", valset)
        check_labels("valset", val, self.metric)
        return train, val


class _BootstrapRun(OptimizerRun):
    """Steps: bootstrap waves until enough demos; then, with a valset, one evaluation."""

    state_model = BootstrapState

    def __init__(
        self,
        optimizer: BootstrapFewShot,
        student: Module,
        task: BootstrapTask,
        valset: list[Example] | None,
        *,
        executor: Executor,
        budget: Budget,
    ) -> None:
        super().__init__(
            name="BootstrapFewShot", executor=executor, budget=budget, max_errors=optimizer.max_errors
        )
        self.settings, self.student, self.task, self.valset = optimizer.settings, student, task, valset
        paths = [path for path, _ in student.named_predictors()]
        self.engine = BootstrapEngine(optimizer.settings, [task], paths, executor)
        self.program: Module | None = None

    async def _step(self) -> StepCost:
        if not self.engine.done:
            cost = await self.engine.wave(self)
            if cost.runs == 0 and not self.engine.done:
                self.stop(self.budget.exhausted() or "budget: no room for another run")
            elif self.engine.done and self.valset is None:
                self._finish()
                self.done = True
            return cost
        return await self._evaluate()

    async def _evaluate(self) -> StepCost:
        program = self._built()
        self.done = True
        if self.valset is None:  # never: without a valset the bootstrap phase ends the run
            return StepCost()
        [result] = await self.executor.evaluate_many([program], self.valset, self.settings.metric)
        self.record(
            Trial(
                step=self.step_index,
                kind="full",
                label="bootstrapped",
                candidate_id=candidate_id(program),
                score=result.score,
                num_examples=result.processed,
            )
        )
        return StepCost(runs=len(self.valset), reported=result.usage)

    def _built(self) -> Module:
        if not self.engine.done:
            return self.task.student(self.student, self.settings)  # mid-run: the best so far, not kept
        if self.program is None:
            self.program = self.task.student(self.student, self.settings)
        return self.program

    def _finish(self) -> None:
        if not self.task.done:
            self.task.settle()
        self._built()

    def result(self) -> Module:
        return self._built()

    def _state(self) -> BootstrapState:
        return BootstrapState(tasks=self.engine.state())

    def _load_state(self, state: BootstrapState) -> None:
        self.engine.load(state.tasks)
        self.program = None
