"""What every optimizer shares: knob checks, input checks, and the step loop over a JSON-able state.

An optimization is an :class:`OptimizerRun`: a sequence of steps, each a call to the executor (a
bootstrap wave, an evaluation of all candidates), with a JSON-able :meth:`~OptimizerRun.state_dict`
between steps. ``compile`` is the short loop ``while not run.done: await run.step()``; a cluster
worker runs the same loop and writes ``state_dict()`` to its checkpoint topic after every step, and a
restarted worker rebuilds the run with ``optimizer.start(..., state=checkpoint)`` and goes on.

Before each step the run asks its budget what still fits; before the first, every input is checked,
so bad input fails before any LM call.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex._sync import run_in_thread, run_sync
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError, OptimizerError
from dspex.lm.usage import Usage, track_usage
from dspex.metrics import FieldMetric
from dspex.optimizers.budget import Budget
from dspex.optimizers.executor import Executor, LocalExecutor
from dspex.optimizers.history import Trial, TrialHistory
from dspex.primitives import Example, Module

__all__ = [
    "DEFAULT_MAX_ERRORS",
    "Optimizer",
    "OptimizerRun",
    "StepCost",
    "Teleprompter",
    "check_examples",
    "check_has_predictors",
    "check_int",
    "check_labels",
    "check_structure",
    "effective_max_errors",
    "reject_unknown",
]

logger = logging.getLogger(__name__)

# The default of dspex.settings.max_errors (DSPy's too); max_errors=None reads the current setting.
DEFAULT_MAX_ERRORS = 10

# The state_dict format; a checkpoint from a newer major version is refused.
STATE_VERSION = 1


# --------------------------------------------------------------------------- checks


def effective_max_errors(max_errors: int | None) -> int:
    """``max_errors``, or ``dspex.settings.max_errors`` when None (DSPy's rule)."""
    if max_errors is not None:
        return max_errors
    configured = getattr(current_settings(), "max_errors", None)
    return DEFAULT_MAX_ERRORS if configured is None else int(configured)


def reject_unknown(where: str, unknown: Mapping[str, Any], accepted_from: Callable[..., Any]) -> None:
    """ConfigurationError naming each unknown keyword and listing the accepted ones."""
    if not unknown:
        return
    params = inspect.signature(accepted_from).parameters.values()
    accepted = [p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD]
    names = ", ".join(map(repr, sorted(unknown)))
    raise ConfigurationError(f"{where}: unknown argument(s) {names}; accepted: {', '.join(accepted)}")


def check_int(name: str, value: Any, *, minimum: int = 0, optional: bool = False) -> Any:
    """``value`` if it is an int >= ``minimum`` (or None when ``optional``), else ConfigurationError."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise ConfigurationError(f"{name} must be {expected}, got {value!r}")
    return value


def check_examples(name: str, examples: Any, *, minimum: int = 1, why: str = "") -> list[Example]:
    """A list of Examples with their inputs marked, at least ``minimum`` of them."""
    if examples is None or isinstance(examples, str | bytes | Mapping):
        raise ConfigurationError(f"{name} must be a list of dspex.Example, got {type(examples).__name__}")
    items = list(examples)
    if len(items) < minimum:
        reason = why or f"it needs at least {minimum}"
        raise ConfigurationError(f"{name} has {len(items)} example(s); {reason}")
    for index, example in enumerate(items):
        if not isinstance(example, Example):
            raise ConfigurationError(f"{name}[{index}] is a {type(example).__name__}, not a dspex.Example")
        if example.input_keys is None:
            raise ConfigurationError(
                f"{name}[{index}] has no input fields marked; build it with .with_inputs('question', ...)"
            )
    return items


def check_has_predictors(optimizer: str, student: Any) -> None:
    """ConfigurationError unless ``student`` is a program with at least one predictor to tune."""
    if not isinstance(student, Module) or not student.named_predictors():
        raise ConfigurationError(f"{optimizer} needs a program with predictors, got {student!r}")


def check_labels(name: str, examples: Sequence[Example], metric: Any) -> None:
    """For a built-in field metric, every example must carry the label it compares with."""
    if not isinstance(metric, FieldMetric):
        return  # a custom metric's needs are its own; it fails the step, not the check
    for index, example in enumerate(examples):
        if metric.field not in example.labels():
            raise ConfigurationError(
                f"{name}[{index}] has no label {metric.field!r} for metric {metric.name} "
                f"(its labels: {', '.join(example.labels().keys()) or 'none'})"
            )


def check_structure(student: Module, teacher: Module) -> None:
    """Student and teacher must have the same predictors at the same paths with the same signatures."""
    mine, theirs = student.named_predictors(), teacher.named_predictors()
    student_paths, teacher_paths = [p for p, _ in mine], [p for p, _ in theirs]
    if student_paths != teacher_paths:
        raise ConfigurationError(
            f"student and teacher differ in structure: predictors {student_paths} vs {teacher_paths}"
        )
    for (path, a), (_, b) in zip(mine, theirs, strict=True):
        if a.signature.dump() != b.signature.dump():
            raise ConfigurationError(f"student and teacher signatures differ at predictor {path!r}")
    if not mine:
        raise ConfigurationError(f"{type(student).__qualname__} has no predictors to optimize")


# --------------------------------------------------------------------------- runs


@dataclass
class StepCost:
    """What a step reports: program runs made, and usage its results carry (for remote work).

    ``reported`` is charged only when the executor runs remotely (``executor.remote``): in-process
    calls are measured around the step, and a local executor's results carry those same calls.
    """

    runs: int = 0
    reported: Usage = field(default_factory=Usage)


class OptimizerRun(ABC):
    """One optimization in progress: call :meth:`step` until :attr:`done`, then :meth:`result`."""

    def __init__(self, *, name: str, executor: Executor, budget: Budget, max_errors: int | None) -> None:
        self.executor = executor
        self.budget = budget
        self.max_errors = effective_max_errors(max_errors)
        self.history = TrialHistory(optimizer=name)
        self.step_index = 0
        self.errors = 0
        self.done = False

    async def step(self) -> None:
        """Do the next step (nothing once done); stops cleanly when the budget is spent."""
        if self.done:
            return
        reason = self.budget.exhausted()
        if reason is not None:
            self.stop(reason)
            return
        with track_usage() as tracker:
            cost = await self._step()
        # In-process calls (proposals, local runs) were measured here; remote workers' calls come
        # back in the results. A cluster step may make both.
        spent = tracker.usage + cost.reported if getattr(self.executor, "remote", False) else tracker.usage
        self.budget.charge(spent, runs=cost.runs)
        self.history.usage = self.budget.spent
        self.step_index += 1

    async def run_to_end(self) -> Module:
        """Every remaining step, then the result."""
        while not self.done:
            await self.step()
        return self.result()

    def stop(self, reason: str) -> None:
        """End the run here (budget, stop_at_score): the result is the best program so far."""
        logger.info("%s stops: %s", self.history.optimizer, reason)
        self.history.stopped = reason
        self._finish()
        self.done = True

    def record(self, trial: Trial) -> Trial:
        return self.history.add(trial)

    def count_errors(self, count: int, last_error: str | None) -> None:
        """Add failed runs or metric calls; more than ``max_errors`` in all fails the run."""
        self.errors += count
        self.check_errors(self.errors, last_error)

    def check_errors(self, count: int, last_error: str | None) -> None:
        """Fail the run (OptimizerError, the reason in the history) when ``count > max_errors``."""
        if count > self.max_errors:
            reason = f"{count} errors (max_errors={self.max_errors}); last: {last_error}"
            self.history.stopped = f"failed: {reason}"
            raise OptimizerError(
                f"{self.history.optimizer} failed: {reason}", reason=reason, history=self.history
            )

    def budget_runs(self, wanted: int, calls_per_run: float) -> int:
        """How many of ``wanted`` program runs this step may make."""
        affordable = self.budget.affordable_runs(calls_per_run)
        return wanted if affordable is None else min(wanted, affordable)

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to go on from here, as JSON data (for checkpoints)."""
        return {
            "version": STATE_VERSION,
            "step": self.step_index,
            "done": self.done,
            "errors": self.errors,
            "history": self.history.to_dict(),
            "budget": self.budget.to_dict(),
            "state": self._state(),
        }

    def load_state_dict(self, data: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a run of the same optimizer, program and data."""
        if data.get("version") != STATE_VERSION:
            raise ConfigurationError(
                f"optimizer state version {data.get('version')!r}; this dspex reads {STATE_VERSION}"
            )
        self.step_index = int(data["step"])
        self.done = bool(data["done"])
        self.errors = int(data["errors"])
        self.history = TrialHistory.from_dict(data["history"])
        limits = (self.budget.max_lm_calls, self.budget.max_cost_usd)
        self.budget = Budget.from_dict(data["budget"])
        self.budget.max_lm_calls, self.budget.max_cost_usd = limits  # the caller's limits win
        self._load_state(data["state"])

    # -- what each optimizer defines -------------------------------------------------------------

    @abstractmethod
    async def _step(self) -> StepCost:
        """One step; sets ``self.done`` (after :meth:`_finish`) when it was the last."""

    @abstractmethod
    def _finish(self) -> None:
        """Build the result from what the steps found (also when stopped early)."""

    @abstractmethod
    def result(self) -> Module:
        """The optimized program (the best so far when the run stopped early)."""

    @abstractmethod
    def _state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load_state(self, state: Mapping[str, Any]) -> None: ...


class Teleprompter:
    """Base of the optimizers (DSPy's ``Teleprompter``; dspex also calls it ``Optimizer``).

    ``compile(student, *, trainset, teacher=None, valset=None, **kwargs)`` returns the optimized
    program. A subclass defines either ``async def acompile(...)`` (dspex's optimizers: ``compile``
    is then its sync wrapper) or a plain ``compile`` (as a DSPy teleprompter does: ``acompile`` then
    runs it in a worker thread). ``history`` is the history of the last compile, where kept.
    """

    history: TrialHistory | None = None

    def __init__(self) -> None:
        # Nothing of its own: get_params() is the subclass's attributes only, as in DSPy.
        pass

    def compile(
        self,
        student: Any,
        *,
        trainset: Sequence[Example] | None = None,
        teacher: Module | None = None,
        valset: Sequence[Example] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Sync form of ``acompile`` (inside async code, ``await optimizer.acompile(...)``)."""
        if type(self).acompile is Teleprompter.acompile:
            raise NotImplementedError(f"{type(self).__name__} defines neither compile nor acompile")
        # Only the keywords given are passed: each optimizer's acompile has its own set.
        given = {"trainset": trainset, "teacher": teacher, "valset": valset}
        kwargs.update({name: value for name, value in given.items() if value is not None})
        return run_sync(self.acompile(student, **kwargs))

    async def acompile(self, *args: Any, **kwargs: Any) -> Any:
        """The optimized program; a subclass that only defines ``compile`` runs it in a thread."""
        if type(self).compile is Teleprompter.compile:
            raise NotImplementedError(f"{type(self).__name__} defines neither compile nor acompile")
        # A worker thread whose sync dspex calls come back to this loop (see dspex._sync).
        return await run_in_thread(self.compile, *args, **kwargs)

    def get_params(self) -> dict[str, Any]:
        """The optimizer's attributes (its knobs among them), as DSPy's ``get_params``."""
        return self.__dict__

    async def _run_all_steps(self, run: OptimizerRun) -> Module:
        """Every step of ``run``; its history stays on the optimizer even when a step fails."""
        try:
            return await run.run_to_end()
        finally:
            self.history = run.history

    @staticmethod
    def executor_or_default(executor: Executor | None) -> Executor:
        if executor is None:
            return LocalExecutor()
        if not isinstance(executor, Executor):
            raise ConfigurationError(
                f"executor must implement dspex.optimizers.Executor (run, evaluate_many), got {executor!r}"
            )
        return executor


# dspex's name for the same class (one class, so isinstance works with either name).
Optimizer = Teleprompter
