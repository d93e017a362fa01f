"""``BootstrapFewShotWithOptuna``: bootstrap demos once, then let optuna pick one demo per predictor.

    optimizer = BootstrapFewShotWithOptuna(metric=metric, num_candidate_programs=16)
    best = optimizer.compile(program, max_demos=4, trainset=train, valset=val)

As DSPy's: ``BootstrapFewShot`` (``max_bootstrapped_demos=max_demos``, ``max_labeled_demos``,
``teacher_settings``, ``max_rounds``) gives each predictor its demos; then ``num_candidate_programs``
optuna trials (a maximizing study) each choose one of those demos per predictor for a fresh copy
of the student and score it on the valset (the trainset when none is given); the best trial's
program is returned. What differs: a predictor that bootstrapped no demo stays without one (DSPy's
trial fails on it); ``seed=`` (dspex only) seeds optuna's sampler so a run can be repeated; the
choices and scores are logged rather than printed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from dspex.evaluate import Evaluate
from dspex.metrics import TraceMetric, resolve_metric
from dspex.optimizers._base import Teleprompter
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.primitives import Example, Module

__all__ = ["BootstrapFewShotWithOptuna"]

logger = logging.getLogger(__name__)


class BootstrapFewShotWithOptuna(Teleprompter):
    """DSPy's ``BootstrapFewShotWithOptuna(metric, teacher_settings=None, max_bootstrapped_demos=4,
    max_labeled_demos=16, max_rounds=1, num_candidate_programs=16, num_threads=None)`` (module docs)."""

    def __init__(
        self,
        metric: TraceMetric | str,
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        num_candidate_programs: int = 16,
        num_threads: int | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.metric = metric
        self.teacher_settings = dict(teacher_settings or {})
        self.max_rounds = max_rounds
        self.num_threads = num_threads
        self.min_num_samples = 1
        self.max_num_samples = max_bootstrapped_demos
        self.num_candidate_sets = num_candidate_programs
        self.max_labeled_demos = max_labeled_demos
        self.seed = seed
        logger.info(
            "BootstrapFewShotWithOptuna: up to %d bootstrapped demos per predictor, %d candidate sets",
            max_bootstrapped_demos, num_candidate_programs,
        )  # fmt: skip

    def compile(  # type: ignore[override]  # DSPy's signature: max_demos is required
        self,
        student: Module,
        *,
        teacher: Module | None = None,
        max_demos: int,
        trainset: Sequence[Example],
        valset: Sequence[Example] | None = None,
    ) -> Module:
        """The student with the best-scoring choice of one bootstrapped demo per predictor."""
        self.trainset = list(trainset)
        self.valset = list(valset) if valset else self.trainset
        self.student = student.reset_copy()
        self.teacher = teacher.deepcopy() if teacher is not None else student.reset_copy()
        bootstrap = BootstrapFewShot(
            metric=self.metric,
            max_bootstrapped_demos=max_demos,
            max_labeled_demos=self.max_labeled_demos,
            teacher_settings=self.teacher_settings,
            max_rounds=self.max_rounds,
        )
        self.compiled_teleprompter = bootstrap.compile(
            self.student, teacher=self.teacher, trainset=self.trainset
        )
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.seed))
        study.optimize(self.objective, n_trials=self.num_candidate_sets)
        best: Module = study.best_trial.user_attrs["program"]
        logger.info(
            "BootstrapFewShotWithOptuna: best score %s (trial %d)", study.best_value, study.best_trial.number
        )
        return best

    def objective(self, trial: optuna.Trial) -> float:
        """One trial: a fresh copy of the student with one demo per predictor, chosen by ``trial``,
        scored on the valset."""
        candidate = self.student.reset_copy()
        chosen = zip(self.compiled_teleprompter.named_predictors(), candidate.named_predictors(), strict=True)
        for (name, bootstrapped), (_, predictor) in chosen:
            demos = bootstrapped.demos
            if not demos:
                predictor.demos = []
                continue
            index = trial.suggest_int(f"demo_index_for_{name}", 0, len(demos) - 1)
            predictor.demos = [dict(demos[index])]
        evaluate = Evaluate(
            devset=self.valset,
            metric=resolve_metric(self.metric),
            num_threads=self.num_threads,
            display_progress=True,
        )
        score = float(evaluate(candidate).score)
        trial.set_user_attr("program", candidate)
        return score
