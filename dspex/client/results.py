"""From a job's score records to results: de-duplication and EvaluationResult per candidate.

Delivery is at-least-once, so a task may be scored twice; the first score per (candidate, example
index) wins, the rule the aggregator and ``dspex results`` apply too. The score keeps local
``Evaluate``'s meaning: 100 x the exact mean (``math.fsum``), rounded to 2 decimals as DSPy does,
with failures in the denominator.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union, get_args, get_origin

import pydantic

from dspex.evaluate import EvaluationResult, ExampleResult
from dspex.evaluate.result import mean_score
from dspex.lm.usage import Usage
from dspex.primitives import Example, Module, Prediction
from dspex.schemas import ScoreRecord, UsageRecord

__all__ = [
    "coerce_outputs",
    "dedupe",
    "evaluation_result",
    "first_unseen",
    "output_types",
    "records_table",
    "usage_of",
]

logger = logging.getLogger(__name__)


def dedupe(records: Iterable[ScoreRecord]) -> list[ScoreRecord]:
    """The first record per (candidate, example index), in the order they were read."""
    return first_unseen(records, {})


def first_unseen(records: Iterable[ScoreRecord], seen: dict[str, set[int]]) -> list[ScoreRecord]:
    """:func:`dedupe` across calls: the records whose (candidate, example index) is not in ``seen``
    (candidate -> example indexes, updated), so a stream keeps indexes, not records."""
    fresh = []
    for record in records:
        indexes = seen.setdefault(record.candidate_id, set())
        if record.example_index not in indexes:
            indexes.add(record.example_index)
            fresh.append(record)
    return fresh


def usage_of(record: UsageRecord) -> Usage:
    """The wire usage as the programming model's Usage."""
    return Usage(**record.model_dump())


def evaluation_result(
    candidate_id: str,
    records: Sequence[ScoreRecord],
    examples: Sequence[Example] | None,
    *,
    total: int,
    metric: str,
    stopped_early: bool = False,
    elapsed_s: float = 0.0,
    field_types: Mapping[str, type[pydantic.BaseModel]] | None = None,
) -> EvaluationResult:
    """The result of one candidate, from its de-duplicated records.

    ``examples`` are the devset as submitted (None: rebuilt from the records, when they carry it).
    ``field_types``: the candidate's :func:`output_types`, so typed outputs come back typed.
    """
    mine = sorted((r for r in records if r.candidate_id == candidate_id), key=lambda r: r.example_index)
    rows = [_example_result(r, _example(r, examples), field_types) for r in mine]
    score = mean_score([r.score for r in rows])  # local Evaluate's rule, rounding included
    usage = sum((usage_of(r.usage) for r in mine), Usage())
    return EvaluationResult(
        score=score,
        records=rows,
        usage=usage,
        errors=sum(r.error is not None for r in rows),
        total=total,
        metric=metric,
        stopped_early=stopped_early or len(rows) < total,
        elapsed_s=elapsed_s,
    )


def _example(record: ScoreRecord, examples: Sequence[Example] | None) -> Example:
    if examples is not None and record.example_index < len(examples):
        return examples[record.example_index]
    return Example(record.example or {})


def _example_result(
    record: ScoreRecord, example: Example, field_types: Mapping[str, type[pydantic.BaseModel]] | None
) -> ExampleResult:
    return ExampleResult(
        index=record.example_index,
        example=example,
        prediction=_prediction(record, field_types),
        score=record.score,
        feedback=record.feedback,
        error=None if record.error is None else f"{record.error.type}: {record.error.message}",
        latency_s=record.latency_s or 0.0,
    )


def _prediction(
    record: ScoreRecord, field_types: Mapping[str, type[pydantic.BaseModel]] | None = None
) -> Prediction | None:
    if record.outputs is None:
        return None
    prediction = Prediction(coerce_outputs(record.outputs, field_types or {}))
    prediction._usage = usage_of(record.usage)
    return prediction


# -- typed outputs ----------------------------------------------------------------------------------


def output_types(program: Module) -> dict[str, type[pydantic.BaseModel]]:
    """The fields of ``program`` whose declared type is a pydantic model (``dspex.History``, ``Tool``
    calls, a user's model), by name: the records carry them as plain JSON.

    Looked up in the program's own ``signature``, then its predictors' outputs, then their inputs
    (ReActV2 returns its predictor's ``history`` input); the first declaration of a name wins.
    """
    signatures = [getattr(program, "signature", None)]
    signatures += [getattr(predictor, "signature", None) for _, predictor in program.named_predictors()]
    fields: list[Mapping[str, Any]] = []
    for kind in ("output_fields", "input_fields"):
        fields += [getattr(sig, kind) for sig in signatures if isinstance(getattr(sig, kind, None), Mapping)]
    found: dict[str, type[pydantic.BaseModel]] = {}
    for declared in fields:
        for name, info in declared.items():
            model = _model_type(getattr(info, "annotation", None))
            if model is not None:
                found.setdefault(name, model)
    return found


def coerce_outputs(
    outputs: Mapping[str, Any], field_types: Mapping[str, type[pydantic.BaseModel]]
) -> dict[str, Any]:
    """``outputs`` with each JSON value of a pydantic-typed field rebuilt as that type; a value that
    does not validate is kept as it came (the record is still the truth, only less typed)."""
    coerced = dict(outputs)
    for name, model in field_types.items():
        value = coerced.get(name)
        if value is None or isinstance(value, model):
            continue
        try:
            coerced[name] = model.model_validate(value)
        except pydantic.ValidationError as exc:
            logger.debug("output %r is not a valid %s; kept as JSON: %s", name, model.__name__, exc)
    return coerced


def _model_type(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The pydantic model an annotation names: ``Model`` or ``Model | None``; else None."""
    if get_origin(annotation) in (Union, types.UnionType):
        models = [arg for arg in get_args(annotation) if arg is not type(None)]
        annotation = models[0] if len(models) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    return None


def records_table(records: Sequence[ScoreRecord]) -> list[dict[str, Any]]:
    """One flat row per record, for tables and CSV: ids, score, error, outputs, usage."""
    return [_row(record) for record in records]


def _row(record: ScoreRecord) -> dict[str, Any]:
    row: dict[str, Any] = {
        "candidate_id": record.candidate_id,
        "example_index": record.example_index,
        "score": record.score,
        "error": "" if record.error is None else f"{record.error.type}: {record.error.message}",
        "feedback": record.feedback or "",
    }
    row.update({f"pred_{key}": value for key, value in (record.outputs or {}).items()})
    row.update({"tokens": record.usage.total_tokens, "cost_usd": record.usage.cost_usd})
    return row
