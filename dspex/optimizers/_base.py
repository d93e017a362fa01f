"""What every optimizer shares: knob checks, input checks, and the step loop over a JSON-able state.

An optimization is an :class:`OptimizerRun`: a sequence of steps, each a call to the executor (a
bootstrap wave, an evaluation of all candidates), with a JSON-able :meth:`~OptimizerRun.state_dict`
between steps. ``compile`` is the short loop ``while not run.done: await run.step()``; a cluster
worker runs the same loop and writes ``state_dict()`` to its checkpoint topic after every step, and a
restarted worker rebuilds the run with ``optimizer.start(..., state=checkpoint)`` and goes on. The
checkpoint is a versioned model (:mod:`dspex.optimizers.checkpoint`): the envelope here, each
optimizer's own part in its :attr:`~OptimizerRun.state_model`.

Before each step the run asks its budget what still fits; before the first, every input is checked,
so bad input fails before any LM call.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from dspex._compile_callback import with_compile_callbacks
from dspex._sync import run_in_thread, run_sync
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError, OptimizerError
from dspex.lm.usage import Usage, track_totals
from dspex.metrics import FieldMetric
from dspex.optimizers.budget import Budget
from dspex.optimizers.checkpoint import BudgetRecord, RunCheckpoint, read_checkpoint, read_state
from dspex.optimizers.executor import Executor, LocalExecutor
from dspex.optimizers.history import STEP_LISTENER, Trial, TrialHistory
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


def check_examples(
    name: str, examples: Any, *, minimum: int = 1, why: str = "", inputs_marked: bool = True
) -> list[Example]:
    """A list of Examples, at least ``minimum`` of them, with their inputs marked unless
    ``inputs_marked=False`` (examples used only as demos, which need their fields, not the marks)."""
    if examples is None or isinstance(examples, str | bytes | Mapping):
        raise ConfigurationError(f"{name} must be a list of dspex.Example, got {type(examples).__name__}")
    items = list(examples)
    if len(items) < minimum:
        reason = why or f"it needs at least {minimum}"
        raise ConfigurationError(f"{name} has {len(items)} example(s); {reason}")
    for index, example in enumerate(items):
        if not isinstance(example, Example):
            raise ConfigurationError(f"{name}[{index}] is a {type(example).__name__}, not a dspex.Example")
        if inputs_marked and example.input_keys is None:
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

    # The model of this optimizer's part of a checkpoint (dspex.optimizers.checkpoint); None: plain
    # JSON data, which _load_state gets back unchecked.
    state_model: ClassVar[type[BaseModel] | None] = None

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
        with track_totals() as tracker:
            cost = await self._step()
        # In-process calls (proposals, local runs) were measured here; remote workers' calls come
        # back in the results. A cluster step may make both.
        spent = tracker.usage + cost.reported if getattr(self.executor, "remote", False) else tracker.usage
        self.budget.charge(spent, runs=cost.runs)
        self.history.usage = self.budget.spent
        self.step_index += 1
        listener = STEP_LISTENER.get()
        if listener is not None:
            listener(self.history)

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
        """Everything needed to go on from here, as JSON data (a :class:`RunCheckpoint`, dumped)."""
        state = self._state()
        checkpoint = RunCheckpoint(
            step=self.step_index,
            done=self.done,
            errors=self.errors,
            history=self.history,
            budget=BudgetRecord.of(self.budget),
            state=state.model_dump(mode="json") if isinstance(state, BaseModel) else dict(state),
        )
        return checkpoint.model_dump(mode="json")

    def load_state_dict(self, data: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a run of the same optimizer, program and data.

        ConfigurationError (one line) for a checkpoint of another version, of another optimizer, or
        with a field of the wrong type; nothing of the run is changed then.
        """
        checkpoint = read_checkpoint(data)
        written_by, mine = checkpoint.history.optimizer, self.history.optimizer
        if written_by and mine and written_by != mine:
            raise ConfigurationError(f"this optimizer checkpoint is of a {written_by} run, not {mine}")
        model = self.state_model
        self._load_state(checkpoint.state if model is None else read_state(model, checkpoint.state))
        self.step_index, self.done, self.errors = checkpoint.step, checkpoint.done, checkpoint.errors
        self.history = checkpoint.history
        self.budget = checkpoint.budget.restore(self.budget)  # the caller's limits win

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
    def _state(self) -> BaseModel | dict[str, Any]:
        """This optimizer's part of the checkpoint: a :attr:`state_model` (plain JSON data when
        there is none)."""

    @abstractmethod
    def _load_state(self, state: Any) -> None:
        """Go on from ``state``: what :meth:`_state` gave, validated as a :attr:`state_model`."""


class Teleprompter:
    """Base of the optimizers (DSPy's ``Teleprompter``; dspex also calls it ``Optimizer``).

    ``compile(student, *, trainset, teacher=None, valset=None, **kwargs)`` returns the optimized
    program. A subclass defines one of:

    - ``start(student, *, trainset, ..., executor=None, state=None)``, the step-by-step run (dspex's
      optimizers): ``acompile`` and ``compile`` are then made from it, taking the same keywords
      (``state`` aside) and showing them to ``inspect.signature``;
    - ``async def acompile(...)``: ``compile`` is then its sync wrapper, with its keywords;
    - a plain ``compile`` (as a DSPy teleprompter does): ``acompile`` then runs it in a worker thread.

    ``history`` is the history of the last compile, where kept. Callbacks hear each compile the
    caller makes once (``on_compile_start`` / ``on_compile_end``; see
    :mod:`dspex._compile_callback`).
    """

    history: TrialHistory | None = None
    callback_kind: ClassVar[str] = "compile"  # a stepwise compile is heard by on_compile_start / _end

    def __init__(self) -> None:
        # Nothing of its own: get_params() is the subclass's attributes only, as in DSPy.
        pass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The compile keywords are written once, on start; what DSPy's callers introspect
        # (inspect.signature(optimizer.compile), as its BetterTogether does) is derived from there.
        super().__init_subclass__(**kwargs)
        _announce_own_compiles(cls)
        if "start" in vars(cls) and "acompile" not in vars(cls):
            made = _stepwise_acompile(cls)
            cls.acompile = with_compile_callbacks(made, none_defaults=False)  # type: ignore[method-assign]
        if "compile" not in vars(cls) and _compile_is_generic(cls):
            cls.compile = _sync_compile(cls)  # type: ignore[method-assign]

    def compile(
        self,
        student: Module,
        *,
        trainset: Sequence[Example] | None = None,
        teacher: Module | None = None,
        valset: Sequence[Example] | None = None,
        **kwargs: Any,
    ) -> Module:
        """Sync form of ``acompile`` (inside async code, ``await optimizer.acompile(...)``)."""
        if type(self).acompile is Teleprompter.acompile:
            raise NotImplementedError(f"{type(self).__name__} defines neither compile nor acompile")
        # Only the keywords given are passed: each optimizer's acompile has its own set.
        given = {"trainset": trainset, "teacher": teacher, "valset": valset}
        kwargs.update({name: value for name, value in given.items() if value is not None})
        return run_sync(self.acompile(student, **kwargs))

    async def acompile(self, *args: Any, **kwargs: Any) -> Module:
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
            self._keep_from_run(run)

    async def _compile_by_steps(self, *args: Any, **kwargs: Any) -> Module:
        """What a ``start``-defined optimizer's ``acompile`` does: start the run, take every step."""
        run: OptimizerRun = self.start(*args, **kwargs)  # type: ignore[attr-defined]
        return await self._run_all_steps(run)

    def _keep_from_run(self, run: OptimizerRun) -> None:
        """Keep what DSPy's optimizer leaves on itself after a compile, besides the history
        (BootstrapFewShot's ``error_count``); also when a step failed."""

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


# --------------------------------------------------------------------------- compile from start

# Marks the compile functions made below, so a subclass's is made again from its own acompile.
_MADE = "__dspex_made_from__"


def _stepwise_acompile(cls: type[Teleprompter]) -> Callable[..., Any]:
    """``cls.acompile``: ``cls.start``'s run to its end, with start's keywords as its signature."""

    async def acompile(self: Teleprompter, *args: Any, **kwargs: Any) -> Module:
        return await self._compile_by_steps(*args, **kwargs)

    start = vars(cls)["start"]
    doc = (
        "The optimized program: :meth:`start`'s run, every step taken (``compile`` is the sync form; "
        f"unknown keywords are a ConfigurationError).\n\n:meth:`start`: {inspect.getdoc(start) or ''}"
    )
    return _made(acompile, cls, _compile_signature(start), doc)


def _announce_own_compiles(cls: type[Teleprompter]) -> None:
    """Wrap the ``compile`` / ``acompile`` written in ``cls``'s body for the callbacks' compile hooks
    (an inherited one is already wrapped; the generic ones only lead to a wrapped one)."""
    for name in ("compile", "acompile"):
        own = vars(cls).get(name)
        if callable(own) and not hasattr(own, _MADE):
            setattr(cls, name, with_compile_callbacks(own))


def _sync_compile(cls: type[Teleprompter]) -> Callable[..., Any]:
    """``cls.compile``: the generic sync wrapper, showing ``cls.acompile``'s signature."""

    def compile(self: Teleprompter, *args: Any, **kwargs: Any) -> Module:
        return Teleprompter.compile(self, *args, **kwargs)

    signature = inspect.signature(cls.acompile)
    doc = "Sync form of :meth:`acompile` (inside async code, ``await optimizer.acompile(...)``)."
    return _made(compile, cls, signature, doc)


def _compile_is_generic(cls: type[Teleprompter]) -> bool:
    """Whether ``cls.compile`` is the generic wrapper of an ``acompile`` of the class's own line
    (not a DSPy-style compile that ``acompile`` runs in a thread)."""
    generic = cls.compile is Teleprompter.compile or hasattr(cls.compile, _MADE)
    return generic and cls.acompile is not Teleprompter.acompile


def _compile_signature(start: Callable[..., Any]) -> inspect.Signature:
    """``start``'s signature as compile shows it: without ``state`` (a worker's resume) and without
    the ``**unknown`` catch-all (start refuses those, listing the accepted keywords)."""
    signature = inspect.signature(start)
    kept = [p for p in signature.parameters.values() if p.name != "state" and p.kind is not p.VAR_KEYWORD]
    return signature.replace(parameters=kept, return_annotation="Module")


def _made(
    function: Callable[..., Any], cls: type, signature: inspect.Signature, doc: str
) -> Callable[..., Any]:
    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__doc__ = doc
    function.__module__ = cls.__module__
    function.__qualname__ = f"{cls.__qualname__}.{function.__name__}"
    setattr(function, _MADE, True)
    return function
