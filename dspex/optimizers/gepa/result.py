"""``DspyGEPAResult``: a GEPA run in detail (``program.detailed_results`` with ``track_stats=True``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gepa.core.result import GEPAResult

from dspex.optimizers.gepa.adapter import DspyAdapter
from dspex.primitives import Module, Prediction

__all__ = ["DspyGEPAResult", "instructions_of"]


@dataclass(frozen=True)
class DspyGEPAResult:
    """The run in detail (``program.detailed_results`` with ``track_stats=True``), as DSPy's.

    ``candidates[i]`` is a program; ``parents[i]`` its parents' indices; ``val_subscores[i]`` its
    score per validation example id; ``per_val_instance_best_candidates`` the Pareto front (which
    candidates win each validation example); ``discovery_eval_counts[i]`` the metric calls made
    when it was found.
    """

    candidates: list[Module]
    parents: list[list[int | None]]
    val_aggregate_scores: list[float]
    val_subscores: list[dict[Any, float]]
    per_val_instance_best_candidates: dict[Any, set[int]]
    discovery_eval_counts: list[int]
    best_outputs_valset: dict[Any, list[tuple[int, Prediction]]] | None = None
    total_metric_calls: int | None = None
    num_full_val_evals: int | None = None
    log_dir: str | None = None
    seed: int | None = None
    val_aggregate_subscores: list[dict[str, float]] | None = None
    per_objective_best_candidates: dict[str, set[int]] | None = None
    objective_pareto_front: dict[str, float] | None = None

    @property
    def best_idx(self) -> int:
        """The candidate with the highest mean validation score (the first of equals)."""
        scores = self.val_aggregate_scores
        return max(range(len(scores)), key=scores.__getitem__)

    @property
    def best_candidate(self) -> Module:
        return self.candidates[self.best_idx]

    @property
    def highest_score_achieved_per_val_task(self) -> dict[Any, float]:
        """The best score reached on each validation example."""
        return {
            val_id: self.val_subscores[min(front)][val_id]
            for val_id, front in self.per_val_instance_best_candidates.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: candidates as their instructions, sets as lists."""
        return {
            "candidates": [instructions_of(program) for program in self.candidates],
            "parents": self.parents,
            "val_aggregate_scores": self.val_aggregate_scores,
            "best_outputs_valset": self.best_outputs_valset,
            "val_subscores": self.val_subscores,
            "per_val_instance_best_candidates": _lists(self.per_val_instance_best_candidates),
            "val_aggregate_subscores": self.val_aggregate_subscores,
            "per_objective_best_candidates": (
                None
                if self.per_objective_best_candidates is None
                else _lists(self.per_objective_best_candidates)
            ),
            "objective_pareto_front": self.objective_pareto_front,
            "discovery_eval_counts": self.discovery_eval_counts,
            "total_metric_calls": self.total_metric_calls,
            "num_full_val_evals": self.num_full_val_evals,
            "log_dir": self.log_dir,
            "seed": self.seed,
            "best_idx": self.best_idx,
        }

    @staticmethod
    def from_gepa_result(result: GEPAResult[Any, Any], adapter: DspyAdapter) -> DspyGEPAResult:
        return DspyGEPAResult(
            candidates=[adapter.build_program(candidate) for candidate in result.candidates],
            parents=result.parents,
            val_aggregate_scores=result.val_aggregate_scores,
            val_subscores=result.val_subscores,
            per_val_instance_best_candidates=result.per_val_instance_best_candidates,
            discovery_eval_counts=result.discovery_eval_counts,
            best_outputs_valset=result.best_outputs_valset,
            total_metric_calls=result.total_metric_calls,
            num_full_val_evals=result.num_full_val_evals,
            log_dir=result.run_dir,
            seed=result.seed,
            val_aggregate_subscores=result.val_aggregate_subscores,
            per_objective_best_candidates=result.per_objective_best_candidates,
            objective_pareto_front=result.objective_pareto_front,
        )


def instructions_of(program: Module) -> dict[str, str]:
    """Each predictor's instructions, by predictor name (a gepa candidate)."""
    return {name: predictor.signature.instructions for name, predictor in program.named_predictors()}


def _lists(sets: dict[Any, set[int]]) -> dict[Any, list[int]]:
    return {key: sorted(members) for key, members in sets.items()}
