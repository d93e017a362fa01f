"""The parts of ``gepa`` (pinned to 0.1.4, the version DSPy 3.4.1 requires) dspex.GEPA relies on.

A failure here names what moved before a run finds out: a keyword gepa's parts no longer take, an
engine method or loop step dspex drives itself (dspex.optimizers.gepa.engine), an adapter hook the
engine no longer calls, a state field or callback event key we read or checkpoint.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

from gepa.core import callbacks
from gepa.core.adapter import EvaluationBatch
from gepa.core.engine import GEPAEngine
from gepa.core.result import GEPAResult
from gepa.core.state import GEPAState
from gepa.proposer.merge import MergeProposer
from gepa.proposer.reflective_mutation.reflective_mutation import ReflectiveMutationProposer
from gepa.strategies.batch_sampler import EpochShuffledBatchSampler
from gepa.strategies.instruction_proposal import InstructionProposalSignature

from dspex.optimizers.gepa.checkpoint import _MERGE_FIELDS, _SAMPLER_FIELDS


def test_the_installed_gepa_is_the_pinned_one() -> None:
    assert version("gepa") == "0.1.4"


def test_the_parts_dspex_builds_take_the_keywords_it_passes() -> None:
    engine = inspect.signature(GEPAEngine.__init__).parameters
    for name in ("stop_callback", "val_evaluation_policy", "acceptance_criterion", "selection_strategy"):
        assert name in engine
    assert "sampling_strategy" in inspect.signature(ReflectiveMutationProposer.__init__).parameters
    assert "val_overlap_floor" in inspect.signature(MergeProposer.__init__).parameters


def test_the_loop_body_dspex_runs_is_the_engines() -> None:
    # dspex.optimizers.gepa.engine.run_iteration is this loop body, one pass per step
    loop = inspect.getsource(GEPAEngine.run)
    for step in (
        "state.i += 1",
        'state.full_program_trace.append({"i": state.i})',
        "self.merge_proposer.merges_due > 0 and self.merge_proposer.last_iter_found_new_program",
        "proposals = self.reflective_proposer.propose(state)",
        "proposal_accepted = self._run_reflective_batch(proposals, state)",
        "initialize_gepa_state(",
    ):
        assert step in loop, step
    for method in ("_run_full_eval_and_add", "_run_reflective_batch", "_should_stop", "evaluator"):
        assert hasattr(GEPAEngine, method) or method == "evaluator", method


def test_the_stateful_fields_a_checkpoint_carries() -> None:
    sampler = EpochShuffledBatchSampler(minibatch_size=3)
    assert all(hasattr(sampler, name) for name in _SAMPLER_FIELDS) and hasattr(sampler, "rng")
    merge = inspect.getsource(MergeProposer.__init__)
    assert all(f"self.{name}" in merge for name in _MERGE_FIELDS)
    assert "self.rng" in merge


def test_the_engine_calls_the_adapter_hooks_we_implement() -> None:
    engine = inspect.getsource(GEPAEngine)
    assert 'getattr(self.adapter, "batch_evaluate", None)' in engine
    assert '"get_adapter_state"' in engine and '"set_adapter_state"' in engine
    proposer = inspect.getsource(ReflectiveMutationProposer)
    # dspex.optimizers.gepa.reflection: the iteration's reflections through reflect_many, at once
    assert 'reflect_many = getattr(self._reflection_lm, "reflect_many", None)' in proposer
    assert "self.adapter.propose_new_texts is not None" in proposer
    assert "reflection_strategy" in inspect.signature(ReflectiveMutationProposer.__init__).parameters
    assert "self.adapter.propose_new_texts(candidate, reflective_dataset, components_to_update)" in proposer
    assert "self.adapter.make_reflective_dataset(" in proposer
    assert (
        "self.module_selector(\n                state, eval_curr.trajectories, eval_curr.scores" in proposer
    )


def test_evaluation_batch_and_result_fields() -> None:
    assert {"outputs", "scores", "trajectories", "objective_scores", "num_metric_calls"} <= set(
        EvaluationBatch.__dataclass_fields__
    )
    fields = set(GEPAResult.__dataclass_fields__)
    assert {
        "candidates",
        "parents",
        "val_aggregate_scores",
        "val_subscores",
        "per_val_instance_best_candidates",
        "discovery_eval_counts",
        "best_outputs_valset",
        "total_metric_calls",
        "num_full_val_evals",
        "run_dir",
        "seed",
        "val_aggregate_subscores",
        "per_objective_best_candidates",
        "objective_pareto_front",
    } <= fields
    assert {"best_candidate", "best_idx"} <= set(dir(GEPAResult))
    assert "state" in inspect.signature(GEPAResult.from_state).parameters


def test_state_and_callback_events_we_read() -> None:
    source = inspect.getsource(GEPAState)
    for name in ("program_candidates", "parent_program_for_candidate", "total_num_evals", "self.i"):
        assert name in source
    assert {"iteration", "state"} <= set(callbacks.IterationStartEvent.__annotations__)
    assert {"iteration", "candidate_idx", "average_score", "num_examples_evaluated", "parent_ids"} <= set(
        callbacks.ValsetEvaluatedEvent.__annotations__
    )


def test_the_reflection_prompt_helpers() -> None:
    prompt = InstructionProposalSignature.prompt_renderer(
        {"current_instruction_doc": "old", "dataset_with_feedback": [{"Feedback": "f"}]}
    )
    assert isinstance(prompt, str) and "old" in prompt and "## Feedback" in prompt
    assert InstructionProposalSignature.output_extractor("x\n```\nnew\n```")["new_instruction"] == "new"


def test_the_draws_the_parent_prefetch_predicts_are_the_proposers() -> None:
    # dspex.optimizers.gepa.prefetch copies the selector and sampler and calls the sampling
    # strategy as propose does; the sampler reads the state's round number only
    propose = inspect.getsource(ReflectiveMutationProposer.propose)
    call = "sample_tasks(state, self.candidate_selector, self.batch_sampler, self.trainset)"
    assert f"self.sampling_strategy.{call}" in propose
    sampler = inspect.getsource(EpochShuffledBatchSampler.next_minibatch_ids)
    assert "state.i" in sampler and "state." not in sampler.replace("state.i", "")
