"""A GEPA optimization's Pareto front as the dashboard shows it, from the job's latest checkpoint.

    view = pareto_view(checkpoint, usage=status.usage)   # None: not a GEPA checkpoint

GEPA keeps, for every validation example, the best score any candidate reached on it and the
candidates that reached it (ties included): a candidate is on the front when it is best on at least
one example, and dominated there when each example it is best on has another, stronger member of
the front best on it too (GEPA draws its next parent from the members not dominated). The view
lists every candidate (its index in gepa's order, its candidate id when the run's history names it,
its instruction per predictor, its valset average and its parents: one for a reflective mutation,
two for a merge), every validation example with its best score, the candidates on its front and
each candidate's score on it, the front's members, and the cost so far.

The checkpoint is dspex's (:class:`~dspex.schemas.OptimizerCheckpoint`), whose ``state["state"]``
is GEPA's part (``gepa_state``: gepa's fields in the tagged JSON form of
:mod:`dspex.optimizers.gepa.checkpoint`, read here without importing gepa). Scores are the metric's
own scale (gepa averages what the metric returns). Pure functions: testable without a broker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.schemas.checkpoints import OptimizerCheckpoint
from dspex.schemas.common import UsageRecord

__all__ = ["candidate_ids", "cost_of", "is_gepa_checkpoint", "pareto_view", "plain"]

# The label GEPA's run gives the trial of a candidate's valset evaluation: "candidate 3 (from 1)".
_LABEL = re.compile(r"^candidate (\d+)\b")


def is_gepa_checkpoint(checkpoint: OptimizerCheckpoint) -> bool:
    """Whether ``checkpoint`` is a GEPA run's (its state has gepa's part, filled or not yet)."""
    inner = checkpoint.state.get("state")
    return isinstance(inner, Mapping) and "gepa_state" in inner


def pareto_view(checkpoint: OptimizerCheckpoint, usage: UsageRecord | None = None) -> dict[str, Any] | None:
    """The front, the candidates and their lineage after the checkpoint's round (see the module);
    ``usage``: the job's spend so far (the status's, newer than the checkpoint's when given). None
    when the checkpoint is not a GEPA run's; no candidates before the seed was evaluated."""
    if not is_gepa_checkpoint(checkpoint):
        return None
    inner: Mapping[str, Any] = checkpoint.state["state"]
    raw = inner.get("gepa_state")
    gepa: Mapping[str, Any] = plain(raw) if isinstance(raw, Mapping) else {}
    spent = usage if usage is not None else checkpoint.usage
    candidates = _candidates(gepa, candidate_ids(checkpoint))
    examples = _examples(gepa, len(candidates))
    front = sorted({index for example in examples for index in example["front"]})
    dominated = _dominated(candidates, [set(e["front"]) for e in examples], front)
    for candidate in candidates:
        candidate["on_front"] = candidate["index"] in front
        candidate["dominated"] = candidate["index"] in dominated
        candidate["front_examples"] = sum(1 for e in examples if candidate["index"] in e["front"])
    return {
        "job_id": checkpoint.job_id,
        "step": checkpoint.step,
        "written_at": checkpoint.written_at.isoformat(),
        "iteration": gepa.get("i"),
        "metric_calls": gepa.get("total_num_evals"),
        "max_metric_calls": inner.get("max_metric_calls"),
        "predictors": list(gepa.get("list_of_named_predictors", [])),
        "candidates": candidates,
        "best_index": _best_index(candidates),
        "front": front,
        "examples": examples,
        "cost": cost_of(spent),
    }


def cost_of(usage: UsageRecord) -> dict[str, Any]:
    """What the run spent so far, as the view shows it."""
    return {
        "cost_usd": usage.cost_usd,
        "lm_calls": usage.lm_calls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
    }


def candidate_ids(checkpoint: OptimizerCheckpoint) -> dict[int, str]:
    """Candidate index -> candidate id, from the trials of the run's history (each GEPA trial is a
    candidate's valset evaluation, labelled with its index)."""
    history = checkpoint.state.get("history")
    trials = history.get("trials", []) if isinstance(history, Mapping) else []
    found: dict[int, str] = {}
    for trial in trials:
        if not isinstance(trial, Mapping) or not trial.get("candidate_id"):
            continue
        match = _LABEL.match(str(trial.get("label") or ""))
        if match is not None:
            found.setdefault(int(match.group(1)), str(trial["candidate_id"]))
    return found


def _candidates(gepa: Mapping[str, Any], ids: Mapping[int, str]) -> list[dict[str, Any]]:
    programs: list[Any] = list(gepa.get("program_candidates", []))
    parents: list[Any] = list(gepa.get("parent_program_for_candidate", []))
    subscores: list[Any] = list(gepa.get("prog_candidate_val_subscores", []))
    discovered: list[Any] = list(gepa.get("num_metric_calls_by_discovery", []))
    rows = []
    first_of: dict[str, int] = {}  # gepa keeps a proposal equal to an earlier candidate as a new one
    for index, instructions in enumerate(programs):
        scores = _at(subscores, index, {})
        texts = dict(instructions) if isinstance(instructions, Mapping) else {}
        same_as = first_of.setdefault(repr(sorted(texts.items())), index)
        known = [p for p in _at(parents, index, []) if isinstance(p, int)]
        rows.append(
            {
                "index": index,
                "candidate_id": ids.get(index),
                "instructions": texts,
                "score": sum(scores.values()) / len(scores) if scores else None,
                "evaluated": len(scores),
                "parents": known,
                "merged": len(known) > 1,
                "changed": _changed(texts, [_at(programs, p, {}) for p in known]),
                "discovered_at_metric_calls": _at(discovered, index, None),
                "same_as": same_as if same_as != index else None,
            }
        )
    return rows


def _changed(instructions: Mapping[str, Any], parents: Sequence[Any]) -> list[str]:
    """The predictors whose instruction differs from every parent's (all of them for the seed)."""
    return [
        name
        for name, text in instructions.items()
        if not any(isinstance(p, Mapping) and p.get(name) == text for p in parents)
    ]


def _examples(gepa: Mapping[str, Any], count: int) -> list[dict[str, Any]]:
    best: Mapping[Any, Any] = gepa.get("pareto_front_valset") or {}
    winners: Mapping[Any, Any] = gepa.get("program_at_pareto_front_valset") or {}
    listed: list[Any] = list(gepa.get("prog_candidate_val_subscores", []))
    subscores = [_at(listed, index, {}) for index in range(count)]
    rows = []
    for val_id in sorted(set(best) | set(winners), key=_order):
        members = winners.get(val_id) or []
        rows.append(
            {
                "id": val_id,
                "best_score": best.get(val_id),
                "front": sorted(m for m in members if isinstance(m, int) and m < count),
                "scores": [s.get(val_id) if isinstance(s, Mapping) else None for s in subscores],
            }
        )
    return rows


def _dominated(
    candidates: Sequence[Mapping[str, Any]], fronts: Sequence[set[int]], members: Sequence[int]
) -> set[int]:
    """The front's members that win no example alone among the others kept: weakest first, a
    member is dropped when every example it is best on has another kept member best on it too."""
    score = {c["index"]: c["score"] if c["score"] is not None else float("-inf") for c in candidates}
    kept, dropped = set(members), set()
    for member in sorted(members, key=lambda m: (score.get(m, float("-inf")), m)):
        others = kept - {member}
        if others and all(others & front for front in fronts if member in front):
            kept.discard(member)
            dropped.add(member)
    return dropped


def _best_index(candidates: Sequence[Mapping[str, Any]]) -> int | None:
    """gepa's best candidate: the highest valset average, the earliest among equals."""
    scored = [c for c in candidates if c["score"] is not None]
    if not scored:
        return None
    return int(max(scored, key=lambda c: (c["score"], -c["index"]))["index"])


def _at(items: Sequence[Any], index: int, default: Any) -> Any:
    return items[index] if index < len(items) and items[index] is not None else default


def _order(key: Any) -> tuple[int, Any]:
    """Validation ids in order: numbers by value, then anything else by its text."""
    if isinstance(key, int | float) and not isinstance(key, bool):
        return (0, key)
    return (1, str(key))


def plain(data: Any) -> Any:
    """The tagged JSON form of a GEPA checkpoint as plain values for reading: ``__items__`` a dict
    (its keys made hashable), ``__set__`` and ``__tuple__`` lists."""
    if isinstance(data, list):
        return [plain(item) for item in data]
    if not isinstance(data, Mapping):
        return data
    if len(data) == 1:
        ((tag, items),) = data.items()
        if tag in ("__set__", "__tuple__") and isinstance(items, list):
            return [plain(item) for item in items]
        if tag == "__items__" and isinstance(items, list):
            return {_key(plain(pair[0])): plain(pair[1]) for pair in items if len(pair) == 2}
    return {key: plain(item) for key, item in data.items()}


def _key(value: Any) -> Any:
    return tuple(_key(item) for item in value) if isinstance(value, list) else value
