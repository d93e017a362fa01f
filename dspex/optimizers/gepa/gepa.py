"""``GEPA``: reflective prompt evolution with Pareto selection (DSPy 3.4.1's optimizer, on ``gepa``).

    def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        ok = pred.answer == gold.answer
        return dspex.Prediction(score=float(ok), feedback="correct" if ok else f"expected {gold.answer}")

    optimizer = dspex.GEPA(metric, auto="light", reflection_lm=dspex.LM("openai/gpt-5"),
                           max_cost_usd=5.0, track_stats=True)
    best = optimizer.compile(program, trainset=train, valset=val)
    best.detailed_results.val_aggregate_scores, optimizer.history.usage

The search is the ``gepa`` package's (``gepa==0.1.4``, the version DSPy 3.4.1 requires): each
iteration picks a parent from the Pareto front of validation scores, runs it on a minibatch of the
trainset, asks the reflection LM for a better instruction from the metric's feedback, and keeps the
child if it scores higher on that minibatch (then scores it on the whole valset). The constructor,
its defaults and the ``auto`` budgets are DSPy's; see :mod:`dspex.optimizers.gepa.adapter` for how
programs run here.

A run is step by step (:meth:`GEPA.start`, :mod:`.run`): the seed's evaluation, then one gepa
iteration per step, with a JSON checkpoint (:mod:`.checkpoint`) between steps, never gepa's pickle.
dspex drives gepa's engine one iteration at a time itself because ``gepa.optimize`` runs its whole
loop in one call and its own resume does not restore its random generators (the decision, in
detail: :mod:`.engine`). So ``dspex worker optimize --optimizer gepa`` checkpoints every round, a
worker killed mid-round loses that round only, and the resumed run follows the uninterrupted one.
``log_dir`` holds that checkpoint (``dspex_gepa_run.json``) for a local compile: a second compile
with the same ``log_dir`` goes on from it. In a cluster job ``reflection_lm`` may be given as LM
settings (JSON, as :class:`~dspex.schemas.LMSpec`): the worker builds it under its allowed API
bases and key variables and refuses it before the run starts (:meth:`GEPA.bind_worker_lms`).

What dspex adds: ``max_lm_calls`` / ``max_cost_usd`` cap every LM call of the run, the reflection
LM's included (the run stops cleanly at the cap with the best program so far, spend bounded by the
calls in flight); ``sampling_strategy`` / ``selection_strategy`` (gepa's several proposals per
iteration, evaluated together); ``reuse_runs`` (default on: a candidate's run on an example is made
once per compile and reused when gepa evaluates that candidate on that example again, most often the
parent's minibatch; gepa still counts it as a metric call, so the budget is DSPy's, and the results
are those an LM cache gives DSPy's GEPA at its defaults; off: every evaluation calls the LM again,
which only differs for a program whose answers vary from call to call); ``speculate`` (default on,
with ``reuse_runs``: the next iterations' reflections and child minibatches are asked ahead,
together, assuming no candidate is added before them, and while a candidate is scored on the
valset the parents the next iterations may select run on their minibatches; each answer goes to
the iteration whose reflection prompt it answers, so gepa's decisions and inputs are unchanged;
the reflections and runs made for iterations that do not come are spent for nothing, so a run with
``max_lm_calls`` or ``max_cost_usd`` does not speculate; see :mod:`.prefetch`); ``executor`` at
compile; and :attr:`history`. What differs: the default proposer (:class:`InstructionProposer`,
DSPy's arguments and behaviour) words its prompt in dspex's own words, and ``gepa_kwargs``'s
``max_reflection_cost`` is refused in favour of ``max_cost_usd``, which covers all LM calls;
``gepa_kwargs`` takes the engine's own knobs only (``frontier_type``, ``acceptance_criterion``,
``val_evaluation_policy``, ``merge_val_overlap_floor``, ``batch_sampler``, ``callbacks``,
``stop_callbacks``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from dspex.errors import ConfigurationError
from dspex.lm import LM
from dspex.optimizers._base import Optimizer, check_examples, check_has_predictors, reject_unknown
from dspex.optimizers.budget import Budget
from dspex.optimizers.executor import Executor
from dspex.optimizers.gepa.adapter import DspyAdapter, ProposalMemo, RunMemo
from dspex.optimizers.gepa.budgets import (
    AUTO_RUN_SETTINGS,
    AutoBudget,
    SpendStopper,
    auto_budget,
    check_budget_choice,
    metric_call_budget,
)
from dspex.optimizers.gepa.checkpoint import RUN_FILE, load_run_file
from dspex.optimizers.gepa.engine import ENGINE_KWARGS, EngineSettings
from dspex.optimizers.gepa.feedback import GEPAFeedbackMetric, check_feedback_metric, make_feedback_fn
from dspex.optimizers.gepa.result import DspyGEPAResult
from dspex.optimizers.gepa.run import GEPARun
from dspex.primitives import Example, Module
from dspex.schemas.common import LMSpec

__all__ = ["AUTO_RUN_SETTINGS", "GEPA", "RUN_FILE", "DspyGEPAResult", "GEPAFeedbackMetric"]

logger = logging.getLogger(__name__)

# gepa_kwargs that dspex.GEPA sets itself or does not read, with what to do instead.
_REFUSED_GEPA_KWARGS = {
    "max_reflection_cost": "pass max_cost_usd=..., which caps every LM call of the run, reflection included",
    "reflection_prompt_template": "pass instruction_proposer=InstructionProposer(prompt_template=...)",
}


class GEPA(Optimizer):
    """DSPy's GEPA: evolve each predictor's instruction by reflecting on feedback (see the module).

    Exactly one budget: ``auto`` ("light", "medium", "heavy"), ``max_full_evals`` or
    ``max_metric_calls``. ``reflection_lm`` is required unless ``instruction_proposer`` is given.
    ``num_threads``: program runs in flight, shared by the candidates evaluated together.
    """

    def __init__(
        self,
        metric: GEPAFeedbackMetric,
        *,
        auto: AutoBudget | None = None,
        max_full_evals: int | None = None,
        max_metric_calls: int | None = None,
        reflection_minibatch_size: int = 3,
        candidate_selection_strategy: Any = "pareto",
        reflection_lm: Any = None,
        skip_perfect_score: bool = True,
        add_format_failure_as_feedback: bool = False,
        instruction_proposer: Any = None,
        code_proposer: Any = None,
        component_selector: Any = "round_robin",
        use_merge: bool = True,
        max_merge_invocations: int | None = 5,
        num_threads: int | None = None,
        failure_score: float = 0.0,
        perfect_score: float = 1.0,
        log_dir: str | None = None,
        track_stats: bool = False,
        use_wandb: bool = False,
        wandb_api_key: str | None = None,
        wandb_init_kwargs: dict[str, Any] | None = None,
        track_best_outputs: bool = False,
        warn_on_score_mismatch: bool = True,
        use_mlflow: bool = False,
        seed: int | None = 0,
        gepa_kwargs: dict[str, Any] | None = None,
        sampling_strategy: Any = None,
        selection_strategy: Any = None,
        max_lm_calls: int | None = None,
        max_cost_usd: float | None = None,
        reuse_runs: bool = True,
        speculate: bool = True,
        **unknown: Any,
    ) -> None:
        super().__init__()
        reject_unknown("GEPA", unknown, GEPA.__init__)
        check_feedback_metric(metric)
        check_budget_choice(auto, max_full_evals, max_metric_calls)
        if reflection_lm is None and instruction_proposer is None:
            raise ConfigurationError(
                "GEPA needs a reflection_lm (a strong model, e.g. dspex.LM('openai/gpt-5', temperature=1.0)) "
                "or an instruction_proposer that brings its own"
            )
        if code_proposer is not None:
            raise ConfigurationError("code_proposer optimizes dspy.Flex code, which dspex does not have")
        if track_best_outputs and not track_stats:
            raise ConfigurationError("track_best_outputs=True needs track_stats=True")
        self.metric_fn = metric
        self.auto, self.max_full_evals, self.max_metric_calls = auto, max_full_evals, max_metric_calls
        self.reflection_minibatch_size = reflection_minibatch_size
        self.candidate_selection_strategy = candidate_selection_strategy
        self.reflection_lm = _reflection_lm(reflection_lm)
        self.skip_perfect_score = skip_perfect_score
        self.add_format_failure_as_feedback = add_format_failure_as_feedback
        self.custom_instruction_proposer = instruction_proposer
        self.component_selector = component_selector
        self.use_merge, self.max_merge_invocations = use_merge, max_merge_invocations
        self.num_threads = num_threads
        self.failure_score, self.perfect_score = failure_score, perfect_score
        self.log_dir, self.track_stats, self.track_best_outputs = log_dir, track_stats, track_best_outputs
        self.use_wandb, self.wandb_api_key, self.wandb_init_kwargs = (
            use_wandb,
            wandb_api_key,
            wandb_init_kwargs,
        )
        self.use_mlflow = use_mlflow
        self.warn_on_score_mismatch = warn_on_score_mismatch
        self.seed = seed
        self.gepa_kwargs = _checked_gepa_kwargs(gepa_kwargs)
        self.sampling_strategy, self.selection_strategy = sampling_strategy, selection_strategy
        self._limits = Budget(max_lm_calls, max_cost_usd)
        self.reuse_runs = reuse_runs
        self.speculate = speculate

    def auto_budget(
        self,
        num_preds: int,
        num_candidates: int,
        valset_size: int,
        minibatch_size: int = 35,
        full_eval_steps: int = 5,
    ) -> int:
        """DSPy's metric-call budget for an ``auto`` run (see :func:`~.budgets.auto_budget`)."""
        return auto_budget(num_preds, num_candidates, valset_size, minibatch_size, full_eval_steps)

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
    ) -> GEPARun:
        """The run, checked and ready for its first step (or resumed from ``state``, a
        :meth:`~dspex.optimizers.OptimizerRun.state_dict` of the same optimization). Its result
        is the student with the best instructions found on ``valset`` (the trainset when not given).

        With ``log_dir``, the run's checkpoint is written there after every step and, without
        ``state``, a run with the same ``log_dir`` (same program, data and knobs) goes on from it.
        """
        # compile is the base class's: this run taken step by step (save_run_file after each)
        reject_unknown("GEPA.compile", unknown, GEPA.start)
        if teacher is not None:
            raise ConfigurationError("GEPA takes no teacher (as in DSPy)")
        if state is None:
            state = load_run_file(self.log_dir)
        check_has_predictors("GEPA", student)
        train = check_examples("trainset", trainset)
        val = None if valset is None else check_examples("valset", valset)
        self.max_metric_calls = metric_call_budget(
            auto=self.auto,
            max_full_evals=self.max_full_evals,
            max_metric_calls=self.max_metric_calls,
            num_components=len(student.named_predictors()),
            train_size=len(train),
            val_size=None if val is None else len(val),
        )
        logger.info("GEPA: up to %d metric calls, valset of %d", self.max_metric_calls, len(val or train))
        if isinstance(self.reflection_lm, LMSpec):  # in-process: no worker pool to build it
            self.reflection_lm = _lm_of_spec(self.reflection_lm)
        run = GEPARun(
            self,
            student,
            train,
            val or train,
            None if executor is None else self.executor_or_default(executor),
            max_metric_calls=self.max_metric_calls,
        )
        if state is not None:
            run.load_state_dict(state)
        return run

    def bind_worker_lms(self, pool: Any) -> None:
        """In a cluster worker: the reflection LM through the worker's LM pool, so the worker's
        allowed API bases and key variables apply to it as to the task LM (SecurityPolicyError
        before the run starts). ``reflection_lm`` may then be given as LMSpec fields (JSON)."""
        lm = self.reflection_lm
        if isinstance(lm, LMSpec):
            self.reflection_lm = pool.for_spec(lm)
        elif isinstance(lm, LM):
            pool.policy.check_lm(lm.api_base, lm.api_key_env)

    def _adapter(self, student: Module, executor: Executor | None, stopper: SpendStopper) -> DspyAdapter:
        predictors = student.named_predictors()
        return DspyAdapter(
            student,
            self.metric_fn,
            {name: make_feedback_fn(self.metric_fn, name, predictor) for name, predictor in predictors},
            failure_score=self.failure_score,
            num_threads=self.num_threads,
            add_format_failure_as_feedback=self.add_format_failure_as_feedback,
            rng=random.Random(self.seed),
            reflection_lm=self.reflection_lm,
            custom_instruction_proposer=self.custom_instruction_proposer,
            warn_on_score_mismatch=self.warn_on_score_mismatch,
            reflection_minibatch_size=self.reflection_minibatch_size,
            executor=executor,
            stopper=stopper,
            memo=RunMemo() if self.reuse_runs else None,
            proposals=ProposalMemo() if self.reuse_runs and self.speculate else None,
        )

    def _engine_settings(self, max_metric_calls: int) -> EngineSettings:
        return EngineSettings(
            candidate_selection_strategy=self.candidate_selection_strategy,
            component_selector=self.component_selector,
            reflection_minibatch_size=self.reflection_minibatch_size,
            perfect_score=self.perfect_score,
            skip_perfect_score=self.skip_perfect_score,
            use_merge=self.use_merge,
            max_merge_invocations=self.max_merge_invocations,
            max_metric_calls=max_metric_calls,
            seed=0 if self.seed is None else self.seed,
            track_best_outputs=self.track_best_outputs,
            sampling_strategy=self.sampling_strategy,
            selection_strategy=self.selection_strategy,
            tracking={
                "use_wandb": self.use_wandb,
                "wandb_api_key": self.wandb_api_key,
                "wandb_init_kwargs": self.wandb_init_kwargs,
                "use_mlflow": self.use_mlflow,
            },
            extra=self.gepa_kwargs,
        )


def _checked_gepa_kwargs(gepa_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(gepa_kwargs or {})
    for name, instead in _REFUSED_GEPA_KWARGS.items():
        if kwargs.get(name) is not None:
            raise ConfigurationError(f"gepa_kwargs[{name!r}] is not used by dspex.GEPA: {instead}")
    kwargs = {name: value for name, value in kwargs.items() if name not in _REFUSED_GEPA_KWARGS}
    unknown = sorted(set(kwargs) - ENGINE_KWARGS)
    if unknown:
        raise ConfigurationError(
            f"gepa_kwargs {', '.join(map(repr, unknown))} are not taken by dspex.GEPA (it runs gepa's "
            f"engine itself, see dspex.optimizers.gepa.engine); it takes: {', '.join(sorted(ENGINE_KWARGS))}"
        )
    return kwargs


def _reflection_lm(value: Any) -> Any:
    """The reflection LM: an LM, or LMSpec fields (a cluster job's JSON knob, see bind_worker_lms)."""
    if isinstance(value, Mapping):
        try:
            return LMSpec.model_validate(dict(value))
        except ValidationError as exc:
            raise ConfigurationError(f"reflection_lm as LM settings: {exc}") from exc
    return value


def _lm_of_spec(spec: LMSpec) -> LM:
    fields = spec.model_dump(exclude={"extra", "model"})
    return LM(spec.model, **fields, **spec.extra)
