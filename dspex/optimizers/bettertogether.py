"""``BetterTogether``: prompt and weight optimizers applied in turn, the best program kept.

    optimizer = BetterTogether(metric=metric, p=BootstrapFewShotWithRandomSearch(metric=metric))
    student.set_lm(lm)                              # every predictor needs its own LM
    best = optimizer.compile(student, trainset=train, valset=val, strategy="p")
    best.candidate_programs[0]["score"], best.flag_compilation_error_occurred

As DSPy's: the optimizers are named by keyword (default ``p=BootstrapFewShotWithRandomSearch`` and
``w=BootstrapFinetune``) and ``strategy`` chains their names (``"p -> w -> p"``). The student is
evaluated first, then after each step, on the valset (or the first ``valset_ratio`` of the trainset;
none with ratio 0); the trainset is reshuffled before each step. A step that raises ends the chain
(``flag_compilation_error_occurred``). The result is the best scored program (the latest one without a
valset), with every candidate in ``candidate_programs`` (best first, earlier first among equals).
Each optimizer gets ``trainset``, ``teacher``, ``valset`` and its ``optimizer_compile_args`` entry,
as far as its compile takes them. A ``w`` step fine-tunes each predictor's LM (dspex's own LM through
its provider, see :mod:`dspex.optimizers.finetune`); a step that fails (a failed fine-tuning job, an
LM that cannot be fine-tuned) ends the chain, and the chain keeps the best program before it.
``metric`` may be a callable or a name (``"numeric_equal:answer"``), as for the other optimizers.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.configuration import current_settings
from dspex.errors import ConfigurationError
from dspex.evaluate import Evaluate
from dspex.metrics import TraceMetric, resolve_metric
from dspex.optimizers._base import Teleprompter
from dspex.optimizers.finetune import (
    BootstrapFinetune,
    all_predictors_have_lms,
    assert_all_predictors_have_lms,
    kill_lms,
    launch_lms,
    prepare_student,
    prepare_teacher,
)
from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch
from dspex.optimizers.utils import eval_candidate_program
from dspex.primitives import Example, Module

__all__ = ["BetterTogether"]

logger = logging.getLogger(__name__)


def compile_parameters(optimizer: Teleprompter) -> set[str]:
    """The keyword names an optimizer's compile takes: its ``acompile``'s for dspex's optimizers
    (their ``compile`` is the generic sync wrapper), else its ``compile``'s."""
    cls = type(optimizer)
    uses_async = cls.compile is Teleprompter.compile and cls.acompile is not Teleprompter.acompile
    method = optimizer.acompile if uses_async else optimizer.compile
    return {
        name
        for name, param in inspect.signature(method).parameters.items()
        if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
    }


class BetterTogether(Teleprompter):
    """DSPy's ``BetterTogether(metric, **optimizers)``."""

    STRAT_SEP = " -> "

    def __init__(self, metric: TraceMetric | str, **optimizers: Teleprompter) -> None:
        super().__init__()
        self.metric = metric = resolve_metric(metric)
        if not optimizers:
            optimizers = {
                "p": BootstrapFewShotWithRandomSearch(metric=metric),
                "w": BootstrapFinetune(metric=metric),
            }
        for key, optimizer in optimizers.items():
            if not isinstance(optimizer, Teleprompter):
                raise TypeError(f"Optimizer '{key}' must be a Teleprompter, got {type(optimizer).__name__}")
        self.optimizers: dict[str, Teleprompter] = dict(optimizers)

    def compile(  # type: ignore[override]  # DSPy's keywords; teacher may be a list
        self,
        student: Module,
        *,
        trainset: Sequence[Example],
        teacher: Module | Sequence[Module] | None = None,
        valset: Sequence[Example] | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        provide_traceback: bool | None = None,
        seed: int | None = None,
        valset_ratio: float = 0.1,
        shuffle_trainset_between_steps: bool = True,
        strategy: str = "p -> w -> p",
        optimizer_compile_args: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Module:
        """The best program of the chain (see the module docstring); ``_compiled = True``."""
        student, teachers = self._prepare_student_and_teacher(student, teacher)
        train, val = self._prepare_trainset_and_valset(trainset, valset, valset_ratio)
        steps = self._prepare_strategy(strategy)
        step_args = self._prepare_optimizer_compile_args(optimizer_compile_args, teachers)
        evaluation = {
            "num_threads": num_threads,
            "max_errors": current_settings().max_errors if max_errors is None else max_errors,
            "provide_traceback": provide_traceback,
        }
        best = self._run_strategies(student, train, teachers, val, steps, step_args, evaluation, seed,
                                    shuffle_trainset_between_steps)  # fmt: skip
        best._compiled = True
        return best

    # -- checks (DSPy's method names: its tests and subclasses call them) ---------------------------

    def _prepare_student_and_teacher(
        self, student: Module, teacher: Module | Sequence[Module] | None
    ) -> tuple[Module, list[Module] | None]:
        student = prepare_student(student)
        assert_all_predictors_have_lms(student, role="student")
        if not teacher:
            return student, None
        teachers: list[Module] = list(teacher) if isinstance(teacher, list | tuple) else [teacher]  # type: ignore[list-item]
        return student, [prepare_teacher(student, t) for t in teachers]

    def _prepare_trainset_and_valset(
        self, trainset: Sequence[Example], valset: Sequence[Example] | None, valset_ratio: float
    ) -> tuple[list[Example], list[Example] | None]:
        if not trainset:
            raise ConfigurationError("trainset cannot be empty")
        if not 0 <= valset_ratio < 1:
            raise ConfigurationError(f"valset_ratio must be in range [0, 1), got {valset_ratio}")
        train = list(trainset)
        if valset:
            return train, list(valset)
        if valset_ratio == 0:
            return train, None
        held_out = int(valset_ratio * len(train))
        return train[held_out:], train[:held_out]

    def _prepare_strategy(self, strategy: str) -> list[str]:
        if not strategy or not strategy.strip():
            raise ConfigurationError("strategy cannot be empty")
        steps = strategy.split(self.STRAT_SEP)
        invalid = [step for step in steps if step not in self.optimizers]
        if invalid:
            raise ConfigurationError(
                f"Strategy contains invalid optimizer keys: {invalid}. "
                f"Valid keys are: {list(self.optimizers)}"
            )
        return steps

    def _prepare_optimizer_compile_args(
        self, optimizer_compile_args: Mapping[str, Mapping[str, Any]] | None, teacher: Any
    ) -> dict[str, dict[str, Any]]:
        if not optimizer_compile_args:
            return {}
        for key, args in optimizer_compile_args.items():
            if key not in self.optimizers:
                raise ConfigurationError(
                    f"Invalid optimizer key '{key}'. Valid keys are: {list(self.optimizers)}"
                )
            self._validate_compile_args(self.optimizers[key], key, args)
        return {key: dict(args) for key, args in optimizer_compile_args.items()}

    def _validate_compile_args(
        self, optimizer: Teleprompter, optimizer_key: str, compile_args: Mapping[str, Any]
    ) -> None:
        if "student" in compile_args:
            raise ConfigurationError(
                f"'student' is not allowed in optimizer_compile_args for optimizer '{optimizer_key}'. "
                "The same student is used throughout compilation."
            )
        accepted = compile_parameters(optimizer)
        invalid = sorted(set(compile_args) - accepted)
        if invalid:
            raise ConfigurationError(
                f"Invalid compile arguments for optimizer '{optimizer_key}': {invalid}. "
                f"{type(optimizer).__name__}.compile() accepts: {sorted(accepted)}"
            )

    # -- the chain ---------------------------------------------------------------------------------

    def _run_strategies(
        self,
        student: Module,
        trainset: list[Example],
        teachers: list[Module] | None,
        valset: list[Example] | None,
        steps: list[str],
        step_args: dict[str, dict[str, Any]],
        evaluation: dict[str, Any],
        seed: int | None,
        shuffle: bool,
    ) -> Module:
        rng = random.Random(seed)
        candidates: list[dict[str, Any]] = []
        failed = False
        launch_lms(student)
        self._add_candidate(
            candidates, student, "", self._evaluate_on_valset(student, valset, rng, evaluation)
        )
        for index, key in enumerate(steps):
            label = self.STRAT_SEP.join(steps[: index + 1])
            try:
                if shuffle:
                    rng.shuffle(trainset)
                student = self._run_step(self.optimizers[key], student, teachers, trainset, valset,
                                         step_args.get(key, {}))  # fmt: skip
                score = self._evaluate_on_valset(student, valset, rng, evaluation)
                self._add_candidate(candidates, student, label, score)
            except Exception as exc:
                # DSPy's rule: a failed step ends the chain; the best program so far is the result.
                failed = True
                logger.error(
                    "BetterTogether step %d (%s) failed: %s: %s", index + 1, key, type(exc).__name__, exc
                )
                break
        kill_lms(student)
        ranked = sorted(
            enumerate(candidates),
            key=lambda item: (item[1]["score"] if item[1]["score"] is not None else float("-inf"), -item[0]),
            reverse=True,
        )
        chosen = candidates[-1] if not valset else ranked[0][1]
        best: Module = chosen["program"]
        best.candidate_programs = [candidate for _, candidate in ranked]  # type: ignore[attr-defined]
        best.flag_compilation_error_occurred = failed  # type: ignore[attr-defined]
        return best

    def _run_step(
        self,
        optimizer: Teleprompter,
        student: Module,
        teachers: list[Module] | None,
        trainset: list[Example],
        valset: list[Example] | None,
        compile_args: dict[str, Any],
    ) -> Module:
        lms_before = [predictor.lm for predictor in student.predictors()]
        student._compiled = False
        offered = {"trainset": trainset, "teacher": teachers, "valset": valset, **compile_args}
        accepted = compile_parameters(optimizer)
        result: Module = optimizer.compile(student, **{k: v for k, v in offered.items() if k in accepted})
        if not all_predictors_have_lms(result):
            # An optimizer that reset the predictors' LMs would leave a weight step nothing to tune.
            for predictor, lm in zip(result.predictors(), lms_before, strict=False):
                predictor.lm = lm
        if self._models_changed(result, lms_before):
            launch_lms(result)  # fine-tuned models are new ones, to launch where that means something
        return result

    def _models_changed(self, student: Module, lms_before: Sequence[Any]) -> bool:
        """Whether the predictors' models differ from ``lms_before``'s (a weight step's new models)."""
        after = [getattr(predictor.lm, "model", None) for predictor in student.predictors()]
        return after != [getattr(lm, "model", None) for lm in lms_before]

    def _add_candidate(
        self, candidates: list[dict[str, Any]], student: Module, strategy: str, score: Any
    ) -> None:
        candidates.append({"score": score, "program": student.deepcopy(), "strategy": strategy})

    def _evaluate_on_valset(
        self, program: Module, valset: list[Example] | None, rng: random.Random, evaluation: dict[str, Any]
    ) -> float | None:
        if not valset:
            return None
        evaluate = Evaluate(devset=valset, metric=self.metric, display_progress=True, **evaluation)
        return float(eval_candidate_program(len(valset), valset, program, evaluate, rng).score)
