"""``MIPROv2``: bootstrapped demo sets and grounded instruction proposals, searched with TPE.

    optimizer = MIPROv2(metric="numeric_equal:answer", auto="light", max_lm_calls=20_000)
    best = optimizer.compile(program, trainset=train, valset=val)
    optimizer.history.trials      # default program, minibatch trials, full evaluations, in trial order

DSPy 3.4.1's procedure and numbers, kept: ``auto`` ("light", "medium", "heavy") decides how many demo
sets and instruction candidates are made, how many trials are run and how large the validation set
is (see :mod:`dspex.optimizers.mipro_settings`); demo sets are made as DSPy's
``create_n_fewshot_demo_sets`` makes them; instructions are proposed from a dataset summary, a
program description, worked examples and a random tip; then a TPE sampler (optuna, seeded) chooses an
instruction and a demo set per predictor for each trial, scored on a random minibatch of the
valset, with a full evaluation of the best-averaging combination every ``minibatch_full_eval_steps``
trials and at the end. The result is the best fully evaluated program (the student itself unless a
candidate scores higher).

What differs, for speed: the demo sets are bootstrapped together in waves, while the proposer
summarises the data and describes the program and the student is scored; every instruction
proposal is requested at once (:mod:`dspex.optimizers.grounded`). In the search, TPE draws its
first ten trials (the default program and the full evaluations count) at random whatever the
scores, so those are asked in batches (up to ``minibatch_full_eval_steps``) and their minibatches
evaluated at the same time, together with the full evaluation due before them (whose combination
the earlier minibatches decide); every later trial is asked once every earlier score is told, as
in DSPy's loop. The last full evaluation is made with the trial before it: it can only choose that
trial's combination or the best untried one before it, so both are evaluated (at most one full
evaluation more than DSPy makes, one round of requests fewer). So the trials, their choices and
scores are the ones a one-at-a-time run (``trials_per_step=1``, DSPy's order) gets; the number of
trials and of candidates is DSPy's.
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.errors import ConfigurationError
from dspex.lm import LM
from dspex.metrics import TraceMetric, resolve_metric
from dspex.optimizers._base import Optimizer, check_examples, check_int, check_labels, reject_unknown
from dspex.optimizers.bootstrap import BootstrapSettings, check_teacher_settings
from dspex.optimizers.budget import Budget
from dspex.optimizers.executor import Executor, LocalExecutor
from dspex.optimizers.grounded import ProposerSwitches
from dspex.optimizers.mipro_run import ZERO_SHOT_BOOTSTRAPPED, MiproRun, MiproSetup, demo_set_plans
from dspex.optimizers.mipro_settings import (
    AUTO_RUN_SETTINGS,
    check_auto_knobs,
    check_minibatch,
    check_trials_per_step,
    resolve_run,
    split_valset,
)
from dspex.primitives import Example, Module

__all__ = ["MIPROv2"]


def _check_lm(name: str, value: Any) -> LM | None:
    if value is not None and not isinstance(value, LM):
        raise ConfigurationError(f"{name} must be a dspex.LM or None, got {type(value).__name__}")
    return value


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) >= 0:
        raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


class MIPROv2(Optimizer):
    """DSPy's ``MIPROv2`` with concurrent bootstraps, proposals and trials, budgets and resumable runs.

    ``prompt_model`` writes the proposals, ``task_model`` runs the program (each None: the context's
    LM; in a cluster optimization, the job's). dspex's extras: ``concurrency`` (DSPy's
    ``num_threads``) for the default LocalExecutor, ``max_lm_calls`` / ``max_cost_usd``. ``verbose``
    is accepted for DSPy's sake: progress is logged at INFO and every trial is in ``history``.

    ``trials_per_step`` (a JSON knob, so it reaches cluster optimizations): how many TPE trials one
    step asks the sampler for and evaluates together. None (the default): the randomly drawn
    trials ``minibatch_full_eval_steps`` at a time, the modelled ones one by one, the same
    trials as 1 gives (see above). 1 gives a checkpoint after every trial, a full evaluation being
    a step of its own: the least work lost when a cluster optimization crashes (at most one
    trial's). Larger values batch every trial, modelled ones too: faster, but the sampler is told
    fewer scores before a batch, so it can choose other trials (deterministic for a seed all the
    same); the number of trials is DSPy's whatever the value.

        optimizer = MIPROv2("numeric_equal:answer", auto="light", seed=9)
        best = await optimizer.acompile(program, trainset=train, valset=val)
        best.score, best.candidate_programs[0]["score"]   # with track_stats=True, as in DSPy
    """

    def __init__(
        self,
        metric: TraceMetric | str,
        prompt_model: LM | None = None,
        task_model: LM | None = None,
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 4,
        auto: str | None = "light",
        num_candidates: int | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        seed: int = 9,
        init_temperature: float = 1.0,
        verbose: bool = False,
        track_stats: bool = True,
        log_dir: str | None = None,
        metric_threshold: float | None = None,
        *,
        concurrency: int | None = None,
        max_lm_calls: int | None = None,
        max_cost_usd: float | None = None,
        trials_per_step: int | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("MIPROv2", unknown, MIPROv2.__init__)
        if log_dir is not None:
            raise ConfigurationError(
                "log_dir is not supported: every trial is in optimizer.history (and in the checkpoints of "
                "a cluster optimization); leave log_dir=None"
            )
        if metric is None:
            raise ConfigurationError("MIPROv2 needs a metric, e.g. metric='numeric_equal:answer'")
        if auto is not None and auto not in AUTO_RUN_SETTINGS:
            raise ConfigurationError(f"auto must be one of {sorted(AUTO_RUN_SETTINGS)} or None, got {auto!r}")
        self.metric = resolve_metric(metric)
        self.prompt_model = _check_lm("prompt_model", prompt_model)
        self.task_model = _check_lm("task_model", task_model)
        self.teacher_lm = check_teacher_settings(teacher_settings)
        self.max_bootstrapped_demos = check_int("max_bootstrapped_demos", max_bootstrapped_demos)
        self.max_labeled_demos = check_int("max_labeled_demos", max_labeled_demos)
        self.auto = auto
        self.num_candidates = check_int("num_candidates", num_candidates, minimum=1, optional=True)
        self.concurrency = LocalExecutor(concurrency, num_threads=num_threads).concurrency
        self.max_errors = check_int("max_errors", max_errors, optional=True)
        self.seed = check_int("seed", seed, minimum=-(2**63))
        self.init_temperature = _check_number("init_temperature", init_temperature)
        self.verbose, self.track_stats = bool(verbose), bool(track_stats)
        self.metric_threshold = metric_threshold
        self._limits = Budget(max_lm_calls, max_cost_usd)
        self.trials_per_step = check_trials_per_step(trials_per_step)

    def start(
        self,
        student: Module,
        *,
        trainset: Sequence[Example],
        teacher: Module | None = None,
        valset: Sequence[Example] | None = None,
        num_trials: int | None = None,
        max_bootstrapped_demos: int | None = None,
        max_labeled_demos: int | None = None,
        seed: int | None = None,
        minibatch: bool = True,
        minibatch_size: int = 35,
        minibatch_full_eval_steps: int = 5,
        program_aware_proposer: bool = True,
        data_aware_proposer: bool = True,
        view_data_batch_size: int = 10,
        tip_aware_proposer: bool = True,
        fewshot_aware_proposer: bool = True,
        requires_permission_to_run: bool | None = None,
        provide_traceback: bool | None = None,
        executor: Executor | None = None,
        state: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> MiproRun:
        """The run, checked and ready for its first step (or resumed from ``state``). Its result:
        the best program found; the keywords are DSPy's ``compile`` ones."""
        reject_unknown("MIPROv2.compile", unknown, MIPROv2.start)
        if requires_permission_to_run:
            raise ConfigurationError("requires_permission_to_run=True: MIPROv2 asks for no confirmation")
        check_auto_knobs(
            self.auto, self.num_candidates, check_int("num_trials", num_trials, minimum=1, optional=True)
        )
        boot = (
            self.max_bootstrapped_demos
            if max_bootstrapped_demos is None
            else check_int("max_bootstrapped_demos", max_bootstrapped_demos)
        )
        labeled = (
            self.max_labeled_demos
            if max_labeled_demos is None
            else check_int("max_labeled_demos", max_labeled_demos)
        )
        zero_shot = boot == 0 and labeled == 0
        run_seed = (
            check_int("seed", seed, minimum=-(2**63), optional=True) or self.seed
        )  # DSPy: ``seed or self.seed``
        train, val = self._checked_sets(trainset, valset)
        rng = random.Random(run_seed)
        plan = resolve_run(
            auto=self.auto,
            num_candidates=self.num_candidates,
            num_trials=num_trials,
            minibatch=bool(minibatch),
            num_predictors=len(student.predictors()),
            zero_shot=zero_shot,
            val_size=len(val),
            rng=rng,
        )
        check_int("minibatch_size", minibatch_size, minimum=1)
        check_int("minibatch_full_eval_steps", minibatch_full_eval_steps, minimum=1)
        check_int("view_data_batch_size", view_data_batch_size, minimum=1)
        check_minibatch(plan.minibatch, minibatch_size, len(plan.val_indices))
        if not student.predictors():
            raise ConfigurationError(f"{type(student).__qualname__} has no predictors to optimize")
        demo_boot, demo_labeled = (ZERO_SHOT_BOOTSTRAPPED, 0) if zero_shot else (boot, labeled)
        _check_demo_sizes(plan.num_fewshot_candidates, demo_boot, demo_labeled)
        setup = MiproSetup(
            name="MIPROv2",
            student=student,
            teacher=teacher,
            trainset=train,
            valset=[val[i] for i in plan.val_indices],
            plan=plan,
            demo_plans=demo_set_plans(plan.num_fewshot_candidates, len(train), demo_boot, demo_labeled, rng),
            settings=BootstrapSettings(
                metric=self.metric,
                metric_threshold=self.metric_threshold,
                teacher_lm=self.teacher_lm,
                max_bootstrapped_demos=demo_boot,
                max_labeled_demos=demo_labeled,
                max_rounds=1,
            ),
            zero_shot=zero_shot,
            seed=run_seed,
            minibatch_size=minibatch_size,
            full_eval_steps=minibatch_full_eval_steps,
            trials_per_step=self.trials_per_step,
            view_data_batch_size=view_data_batch_size,
            switches=ProposerSwitches(
                program_aware=bool(program_aware_proposer),
                data_aware=bool(data_aware_proposer),
                tip_aware=bool(tip_aware_proposer),
                fewshot_aware=bool(fewshot_aware_proposer),
            ),
            prompt_model=self.prompt_model,
            task_model=self.task_model,
            init_temperature=self.init_temperature,
            track_stats=self.track_stats,
            limits=self._limits,
            max_errors=self.max_errors,
        )
        chosen = LocalExecutor(self.concurrency) if executor is None else self.executor_or_default(executor)
        run = MiproRun(setup, chosen, rng)
        if state is not None:
            run.load_state_dict(state)
        return run

    def _checked_sets(
        self, trainset: Sequence[Example], valset: Sequence[Example] | None
    ) -> tuple[list[Example], list[Example]]:
        """DSPy's sets: without a valset, the last 80% of the trainset (at most 1000) validates."""
        train = check_examples("trainset", trainset, minimum=1, why="MIPROv2 needs training examples")
        check_labels("trainset", train, self.metric)
        if valset is not None:
            val = check_examples("valset", valset, minimum=1)
            check_labels("valset", val, self.metric)
            return train, val
        cut, _ = split_valset(len(train), has_valset=False)
        return train[:cut], train[cut:]


def _check_demo_sizes(num_sets: int, max_bootstrapped: int, max_labeled: int) -> None:
    # Demo sets past the first three bootstrap a random number of demos in [1, max_bootstrapped_demos].
    shuffled = num_sets > 3 or (num_sets > 1 and max_labeled == 0)
    if shuffled and max_bootstrapped < 1:
        raise ConfigurationError(
            "max_bootstrapped_demos=0 with max_labeled_demos > 0 leaves the shuffled demo sets nothing to "
            "bootstrap (each draws 1..max_bootstrapped_demos demos); set max_bootstrapped_demos >= 1, or "
            "both to 0 for a zero-shot optimization"
        )
