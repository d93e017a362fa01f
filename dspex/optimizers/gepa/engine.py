"""gepa's engine, driven one iteration at a time (so a run can checkpoint between iterations).

Decision (gepa 0.1.4): ``gepa.optimize`` builds its engine and runs ``GEPAEngine.run()``, one loop
that only stops at its stop condition; its own resume reloads a pickle of ``GEPAState`` but not the
random generators of its selector, batch sampler and merge proposer, so a resumed run takes other
minibatches than an uninterrupted one (and it re-evaluates the seed). dspex therefore builds the
same parts ``gepa.optimize`` builds (:func:`build_engine`) and runs the loop itself:
:func:`evaluate_seed` is the engine's preamble (the seed's valset evaluation and the state) and
:func:`run_iteration` one pass of its loop body (a scheduled merge, else reflective proposals and
their acceptance), through the engine's own methods (``_run_full_eval_and_add``,
``_run_reflective_batch``), so gepa's proposal, acceptance and Pareto rules are unchanged. The
reflections of an iteration with several proposals run at once (:mod:`.reflection`), and the
parents' minibatches, reflections and children's minibatches of the next iterations are made ahead,
together (:mod:`.prefetch`), the next parents' runs also while a new candidate is scored on the
valset (:class:`_HedgingEngine`, :func:`evaluate_seed`).
Everything an iteration depends on (the state, the shared generator, the sampler's epoch, the merge
bookkeeping) is exported by :mod:`.checkpoint` as JSON, not pickled. Contract tests pin the parts of
gepa this relies on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from gepa.core.callbacks import (
    CandidateAcceptedEvent,
    IterationEndEvent,
    IterationStartEvent,
    MergeAcceptedEvent,
    MergeAttemptedEvent,
    MergeRejectedEvent,
    OptimizationStartEvent,
    ValsetEvaluatedEvent,
    notify_callbacks,
)
from gepa.core.data_loader import ensure_loader
from gepa.core.engine import GEPAEngine
from gepa.core.state import GEPAState, ValsetEvaluation, initialize_gepa_state
from gepa.logging.experiment_tracker import create_experiment_tracker
from gepa.proposer.merge import MergeProposer
from gepa.proposer.reflective_mutation.base import CandidateSelector
from gepa.proposer.reflective_mutation.reflective_mutation import ReflectiveMutationProposer
from gepa.strategies.acceptance import (
    AcceptanceCriterion,
    ImprovementOrEqualAcceptance,
    StrictImprovementAcceptance,
)
from gepa.strategies.batch_sampler import EpochShuffledBatchSampler
from gepa.strategies.candidate_selector import (
    CurrentBestCandidateSelector,
    EpsilonGreedyCandidateSelector,
    ParetoCandidateSelector,
    TopKParetoCandidateSelector,
)
from gepa.strategies.component_selector import (
    AllReflectionComponentSelector,
    RoundRobinReflectionComponentSelector,
)
from gepa.strategies.eval_policy import EvaluationPolicy, FullEvaluationPolicy
from gepa.utils import CompositeStopper, MaxMetricCallsStopper

from dspex.errors import ConfigurationError
from dspex.optimizers.gepa import _threads
from dspex.optimizers.gepa.prefetch import (
    LOOKAHEAD,
    hedge_parents,
    prefetch_parents,
    speculate_children,
)
from dspex.optimizers.gepa.reflection import ConcurrentReflection, ProposerView

__all__ = ["ENGINE_KWARGS", "EngineParts", "build_engine", "evaluate_seed", "run_iteration"]

logger = logging.getLogger(__name__)

# gepa_kwargs dspex.GEPA passes on to gepa's parts (everything else is a ConfigurationError).
ENGINE_KWARGS = frozenset(
    {
        "frontier_type",
        "acceptance_criterion",
        "val_evaluation_policy",
        "merge_val_overlap_floor",
        "batch_sampler",
        "callbacks",
        "stop_callbacks",
    }
)

_SELECTORS: dict[str, Callable[[random.Random], CandidateSelector]] = {
    "pareto": lambda rng: ParetoCandidateSelector(rng=rng),
    # gepa leaves this selector's __init__ unannotated
    "current_best": lambda rng: CurrentBestCandidateSelector(),  # type: ignore[no-untyped-call]
    "epsilon_greedy": lambda rng: EpsilonGreedyCandidateSelector(epsilon=0.1, rng=rng),
    "top_k_pareto": lambda rng: TopKParetoCandidateSelector(k=5, rng=rng),
}
_COMPONENT_SELECTORS = {
    "round_robin": RoundRobinReflectionComponentSelector,
    "all": AllReflectionComponentSelector,
}
_ACCEPTANCE = {
    "strict_improvement": StrictImprovementAcceptance,
    "improvement_or_equal": ImprovementOrEqualAcceptance,
}


@dataclass(frozen=True)
class EngineSettings:
    """What the engine is built from: GEPA's knobs, resolved for one run."""

    candidate_selection_strategy: Any
    component_selector: Any
    reflection_minibatch_size: int
    perfect_score: float
    skip_perfect_score: bool
    use_merge: bool
    max_merge_invocations: int | None
    max_metric_calls: int
    seed: int
    track_best_outputs: bool
    sampling_strategy: Any
    selection_strategy: Any
    tracking: Mapping[str, Any]
    extra: Mapping[str, Any]


@dataclass
class EngineParts:
    """The engine and the stateful parts a checkpoint must carry besides gepa's state."""

    engine: GEPAEngine[Any, Any, Any, Any]
    rng: random.Random  # shared by the candidate selector, the batch sampler and the merge proposer
    sampler: Any
    merge: MergeProposer[Any] | None
    callbacks: list[Any]
    max_metric_calls: int


def build_engine(
    settings: EngineSettings,
    *,
    adapter: Any,
    seed_candidate: dict[str, str],
    trainset: Sequence[Any],
    valset: Sequence[Any],
    stoppers: Sequence[Any],
    callbacks: Sequence[Any],
    logger: Any,
) -> EngineParts:
    """The parts ``gepa.optimize`` would build for these settings (see the module)."""
    extra = dict(settings.extra)
    rng = random.Random(settings.seed)
    sampler = extra.get("batch_sampler") or EpochShuffledBatchSampler(
        minibatch_size=settings.reflection_minibatch_size, rng=rng
    )
    all_callbacks = [*callbacks, *(extra.get("callbacks") or [])]
    tracker = create_experiment_tracker(**settings.tracking)
    train_loader: Any = ensure_loader(list(trainset))
    val_loader: Any = ensure_loader(list(valset))
    reflective = ReflectiveMutationProposer(
        logger=logger,
        trainset=train_loader,
        # proposals go through reflection_strategy, all at once (ProposerView hides propose_new_texts)
        adapter=cast(Any, ProposerView(adapter)),
        reflection_strategy=ConcurrentReflection(adapter),
        candidate_selector=_candidate_selector(settings.candidate_selection_strategy, rng),
        module_selector=_component_selector(settings.component_selector),
        batch_sampler=sampler,
        perfect_score=settings.perfect_score,
        skip_perfect_score=settings.skip_perfect_score,
        experiment_tracker=tracker,
        callbacks=all_callbacks,
        sampling_strategy=settings.sampling_strategy,
    )
    merge = _merge_proposer(settings, adapter, val_loader, rng, logger, all_callbacks)
    engine = _HedgingEngine(
        adapter=adapter,
        run_dir=None,  # dspex checkpoints the run itself (JSON), never gepa's pickle
        valset=val_loader,
        seed_candidate=seed_candidate,
        perfect_score=settings.perfect_score,
        seed=settings.seed,
        reflective_proposer=reflective,
        merge_proposer=merge,
        frontier_type=extra.get("frontier_type", "instance"),
        logger=logger,
        experiment_tracker=tracker,
        callbacks=all_callbacks,
        track_best_outputs=settings.track_best_outputs,
        raise_on_exception=True,
        stop_callback=CompositeStopper(
            MaxMetricCallsStopper(settings.max_metric_calls),
            *stoppers,
            *_as_list(extra.get("stop_callbacks")),
        ),
        val_evaluation_policy=_eval_policy(extra.get("val_evaluation_policy")),
        acceptance_criterion=_acceptance(extra.get("acceptance_criterion", "strict_improvement")),
        selection_strategy=settings.selection_strategy,
    )
    engine.max_metric_calls = settings.max_metric_calls
    return EngineParts(engine, rng, sampler, merge, all_callbacks, settings.max_metric_calls)


class _HedgingEngine(GEPAEngine[Any, Any, Any, Any]):
    """gepa's engine, whose valset evaluation of new candidates runs the parents the next
    iterations may select meanwhile (:func:`~.prefetch.hedge_parents`); nothing else differs."""

    max_metric_calls = 0

    def _evaluate_programs_on_valset(self, programs: list[dict[str, str]], state: Any) -> Any:
        valset = self.valset
        size = len(programs) * (0 if valset is None else len(valset))
        evals_left = self.max_metric_calls - state.total_num_evals - size

        def hedge() -> None:
            if all(_known_runs(self.adapter, program, valset) for program in programs):
                return  # the evaluation waits for no LM call: the next iteration predicts exactly
            hedge_parents(
                self.reflective_proposer,
                self.adapter,
                state,
                programs,
                evals_left=evals_left,
                num_threads=_threads_besides(self.adapter, size),
            )

        return _alongside(
            lambda: super(_HedgingEngine, self)._evaluate_programs_on_valset(programs, state), hedge
        )


def _known_runs(adapter: Any, program: dict[str, str], valset: Any) -> bool:
    memo = getattr(adapter, "memo", None)
    if memo is None or valset is None:
        return False
    examples = valset.fetch(list(valset.all_ids()))
    return len(memo.lookup(program, examples, False)) == len(examples)


def _threads_besides(adapter: Any, in_flight: int) -> int | None:
    """The runs a hedge may have in flight beside ``in_flight`` others (None: the adapter's bound)."""
    total = getattr(adapter, "num_threads", None)
    return None if total is None else max(1, total - in_flight)


def _alongside(main: Callable[[], Any], side: Callable[[], None]) -> Any:
    """``main()``'s result, ``side()`` having run at the same time in another thread (with this
    context: LM, settings, usage trackers); a failure of ``side`` is logged, never raised."""

    def guarded() -> None:
        try:
            side()
        except Exception as exc:  # the hedge only fills the memo: without it the run is the same
            logger.debug("hedged runs failed: %s: %s", type(exc).__name__, exc)

    future = _threads.start(guarded)
    try:
        return main()
    finally:
        future.result()


def _candidate_selector(choice: Any, rng: random.Random) -> CandidateSelector:
    if isinstance(choice, CandidateSelector):
        return choice
    if choice not in _SELECTORS:
        raise ConfigurationError(
            f"candidate_selection_strategy must be one of {', '.join(map(repr, _SELECTORS))} or a "
            f"gepa CandidateSelector, got {choice!r}"
        )
    return _SELECTORS[choice](rng)


def _component_selector(choice: Any) -> Any:
    if not isinstance(choice, str):
        return choice  # a ReflectionComponentSelector, or a function of the same shape
    if choice not in _COMPONENT_SELECTORS:
        raise ConfigurationError(
            f"component_selector must be 'round_robin', 'all' or a selector, got {choice!r}"
        )
    return _COMPONENT_SELECTORS[choice]()


def _acceptance(choice: Any) -> AcceptanceCriterion:
    if isinstance(choice, AcceptanceCriterion):
        return choice
    if choice not in _ACCEPTANCE:
        raise ConfigurationError(
            f"gepa_kwargs['acceptance_criterion'] must be one of {', '.join(map(repr, _ACCEPTANCE))} "
            f"or a gepa AcceptanceCriterion, got {choice!r}"
        )
    return cast(AcceptanceCriterion, _ACCEPTANCE[choice]())


def _eval_policy(choice: Any) -> EvaluationPolicy[Any, Any]:
    if choice is None or choice == "full_eval":
        return FullEvaluationPolicy()
    if not isinstance(choice, EvaluationPolicy):
        raise ConfigurationError(
            "gepa_kwargs['val_evaluation_policy'] must be 'full_eval' or a gepa EvaluationPolicy, "
            f"got {choice!r}"
        )
    return choice


def _merge_proposer(
    settings: EngineSettings,
    adapter: Any,
    val_loader: Any,
    rng: random.Random,
    logger: Any,
    callbacks: list[Any],
) -> MergeProposer[Any] | None:
    if not settings.use_merge:
        return None

    def evaluator(inputs: list[Any], program: dict[str, str]) -> tuple[Any, Any, Any]:
        result = adapter.evaluate(inputs, program, capture_traces=False)
        return result.outputs, result.scores, result.objective_scores

    return MergeProposer(
        logger=logger,
        valset=val_loader,
        evaluator=evaluator,
        use_merge=True,
        # DSPy's None means gepa's default of 5 merges
        max_merge_invocations=5 if settings.max_merge_invocations is None else settings.max_merge_invocations,
        rng=rng,
        val_overlap_floor=settings.extra.get("merge_val_overlap_floor", 5),
        callbacks=callbacks,
    )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


# --------------------------------------------------------------------------- the loop


def evaluate_seed(parts: EngineParts) -> GEPAState[Any, Any]:
    """The engine's preamble: the seed candidate on the valset, and the state that starts from it."""
    engine = parts.engine
    valset = engine.valset
    assert valset is not None  # build_engine always gives one
    notify_callbacks(
        engine.callbacks,
        "on_optimization_start",
        OptimizationStartEvent(
            seed_candidate=engine.seed_candidate,
            trainset_size=len(engine.reflective_proposer.trainset),
            valset_size=len(valset),
            config={"perfect_score": engine.perfect_score, "seed": engine.seed},
        ),
    )
    ids = list(valset.all_ids())
    outputs, scores, objectives = _alongside(
        lambda: engine.evaluator(valset.fetch(ids), engine.seed_candidate),
        lambda: _hedge_seed(parts, ids),
    )
    evaluation = ValsetEvaluation(
        outputs_by_val_id=dict(zip(ids, outputs, strict=False)),
        scores_by_val_id=dict(zip(ids, scores, strict=False)),
        objective_scores_by_val_id=dict(zip(ids, objectives, strict=False))
        if objectives is not None
        else None,
    )
    state: GEPAState[Any, Any] = initialize_gepa_state(
        run_dir=None,
        logger=engine.logger,
        seed_candidate=engine.seed_candidate,
        seed_valset_evaluation=evaluation,
        track_best_outputs=engine.track_best_outputs,
        frontier_type=engine.frontier_type,
    )
    average, _ = state.get_program_average_val_subset(0)
    notify_callbacks(
        engine.callbacks,
        "on_valset_evaluated",
        ValsetEvaluatedEvent(
            iteration=0,
            candidate_idx=0,
            candidate=engine.seed_candidate,
            scores_by_val_id=dict(state.prog_candidate_val_subscores[0]),
            average_score=average,
            num_examples_evaluated=len(ids),
            total_valset_size=len(valset),
            parent_ids=[],
            is_best_program=True,
            outputs_by_val_id=None,
        ),
    )
    if parts.merge is not None:
        parts.merge.last_iter_found_new_program = False
    return state


def _hedge_seed(parts: EngineParts, val_ids: list[Any]) -> None:
    """The first iterations' parent runs (the seed's, the only candidate) during its valset
    evaluation: predicted from a state whose valset scores are placeholders, which a selector
    of the Pareto front or of the best candidate cannot tell apart when there is one candidate."""
    engine = parts.engine
    placeholder = ValsetEvaluation(
        outputs_by_val_id=dict.fromkeys(val_ids),
        scores_by_val_id=dict.fromkeys(val_ids, 0.0),
        objective_scores_by_val_id=None,
    )
    state: GEPAState[Any, Any] = initialize_gepa_state(
        run_dir=None,
        logger=engine.logger,
        seed_candidate=engine.seed_candidate,
        seed_valset_evaluation=placeholder,
        track_best_outputs=False,
        frontier_type=engine.frontier_type,
    )
    hedge_parents(
        engine.reflective_proposer,
        engine.adapter,
        state,
        [],
        evals_left=parts.max_metric_calls - len(val_ids),
        rounds=LOOKAHEAD,
        num_threads=_threads_besides(engine.adapter, len(val_ids)),
    )


def should_stop(parts: EngineParts, state: GEPAState[Any, Any]) -> bool:
    """The engine's stop condition (metric calls, the LM-call / USD cap, the user's stoppers)."""
    return bool(parts.engine._should_stop(state))


def run_iteration(parts: EngineParts, state: GEPAState[Any, Any]) -> bool:
    """One pass of the engine's loop body; True when a candidate was added to the pool."""
    engine = parts.engine
    state.i += 1
    state.full_program_trace.append({"i": state.i})
    notify_callbacks(
        engine.callbacks,
        "on_iteration_start",
        IterationStartEvent(
            iteration=state.i + 1, state=state, trainset_loader=engine.reflective_proposer.trainset
        ),
    )
    accepted = False
    try:
        merged = _try_merge(parts, state)
        if merged is not None:
            accepted = merged
            return accepted
        evals_left = parts.max_metric_calls - state.total_num_evals
        proposer, adapter = engine.reflective_proposer, engine.adapter
        prefetch_parents(proposer, adapter, state, evals_left=evals_left)
        speculate_children(proposer, adapter, state, evals_left, valset=_full_valset(engine))
        proposals = proposer.propose(state)
        if proposals:
            accepted = engine._run_reflective_batch(proposals, state)
        else:
            engine.logger.log(f"Iteration {state.i + 1}: Reflective mutation did not propose a new candidate")
        return accepted
    finally:
        notify_callbacks(
            engine.callbacks,
            "on_iteration_end",
            IterationEndEvent(iteration=state.i + 1, state=state, proposal_accepted=accepted),
        )


def _full_valset(engine: GEPAEngine[Any, Any, Any, Any]) -> list[Any] | None:
    """The valset's examples when gepa scores a new candidate on all of them (its default policy),
    else None (another policy chooses a part, which is not predicted)."""
    valset = engine.valset
    if valset is None or type(engine.val_evaluation_policy) is not FullEvaluationPolicy:
        return None
    return list(valset.fetch(list(valset.all_ids())))


def _try_merge(parts: EngineParts, state: GEPAState[Any, Any]) -> bool | None:
    """A scheduled merge, as the engine does it: None when none was tried (reflect instead),
    else whether the merged candidate was accepted (the iteration ends either way)."""
    merge, engine = parts.merge, parts.engine
    if merge is None or not merge.use_merge:
        return None
    if not (merge.merges_due > 0 and merge.last_iter_found_new_program):
        merge.last_iter_found_new_program = False
        return None
    proposal = merge.propose(state)
    merge.last_iter_found_new_program = False
    if proposal is None or proposal.tag != "merge":
        return None
    iteration = state.i + 1
    parent_sums = proposal.subsample_scores_before or [float("-inf"), float("-inf")]
    new_sum = sum(proposal.subsample_scores_after or [])
    attempted = MergeAttemptedEvent(
        iteration=iteration, parent_ids=proposal.parent_program_ids, merged_candidate=proposal.candidate
    )
    notify_callbacks(engine.callbacks, "on_merge_attempted", attempted)
    if new_sum < max(parent_sums):
        reason = f"Merged score {new_sum} worse than both parents {parent_sums}"
        rejected = MergeRejectedEvent(
            iteration=iteration, parent_ids=proposal.parent_program_ids, reason=reason
        )
        notify_callbacks(engine.callbacks, "on_merge_rejected", rejected)
        return False
    new_idx, _ = engine._run_full_eval_and_add(
        new_program=proposal.candidate, state=state, parent_program_idx=proposal.parent_program_ids
    )
    merge.merges_due -= 1
    merge.total_merges_tested += 1
    parents = proposal.parent_program_ids
    notify_callbacks(
        engine.callbacks,
        "on_merge_accepted",
        MergeAcceptedEvent(iteration=iteration, new_candidate_idx=new_idx, parent_ids=parents),
    )
    notify_callbacks(
        engine.callbacks,
        "on_candidate_accepted",
        CandidateAcceptedEvent(
            iteration=iteration, new_candidate_idx=new_idx, new_score=new_sum, parent_ids=parents
        ),
    )
    return True
