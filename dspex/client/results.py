"""From a job's score records to results: de-duplication and EvaluationResult per candidate.

Delivery is at-least-once, so a task may be scored twice; the first score per (candidate, example
index) wins, the rule the aggregator and ``dspex results`` apply too. The score keeps local
``Evaluate``'s meaning: 100 x the exact mean (``math.fsum``), rounded to 2 decimals as DSPy does,
with failures in the denominator.
"""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union, get_args, get_origin

import pydantic
from pydantic import Field

from dspex.adapters.types import Image
from dspex.adapters.types.base_type import CUSTOM_TYPE_END_IDENTIFIER, CUSTOM_TYPE_START_IDENTIFIER, Type
from dspex.evaluate import EvaluationResult, ExampleResult
from dspex.evaluate.result import mean_score
from dspex.lm.usage import Usage
from dspex.primitives import Example, Module, Prediction
from dspex.schemas import CallbackEvent, LMCallRecord, ScoreRecord, TraceEntry, UsageRecord

__all__ = [
    "EvaluatedScore",
    "coerce_outputs",
    "dedupe",
    "evaluation_result",
    "first_unseen",
    "output_types",
    "records_table",
    "usage_of",
]

logger = logging.getLogger(__name__)


# A prefix no writer puts on a key: a field read only under such a name is never read from the wire.
_NOT_READ = "\x00dspex-not-read:"


class EvaluatedScore(ScoreRecord):
    """A :class:`ScoreRecord` as ``Client.evaluate`` reads it: the trace, callback events and LM call
    log stay unread (empty) because its :class:`EvaluationResult` holds none of them.

    The LM call log alone carries the whole prompt of every call; skipping the three takes decoding a
    typical 1,700-byte record from about 19 to 15 us and leaves the collector fewer objects to walk
    (issue 18). Anything that needs them reads :class:`ScoreRecord` (``Client.results``).
    """

    trace: list[TraceEntry] = Field(default_factory=list, validation_alias=_NOT_READ + "trace")
    callback_events: list[CallbackEvent] | None = Field(
        default=None, validation_alias=_NOT_READ + "callback_events"
    )
    lm_call_log: list[LMCallRecord] | None = Field(default=None, validation_alias=_NOT_READ + "lm_call_log")


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
    # The record's values were validated when it was decoded: the same fields, no second check.
    return Usage.model_construct(
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        cost_usd=record.cost_usd,
        lm_calls=record.lm_calls,
        cache_hits=record.cache_hits,
    )


def evaluation_result(
    candidate_id: str,
    records: Sequence[ScoreRecord],
    examples: Sequence[Example] | None,
    *,
    total: int,
    metric: str,
    stopped_early: bool = False,
    elapsed_s: float = 0.0,
    field_types: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """The result of one candidate, from its de-duplicated records.

    ``examples`` are the devset as submitted (None: rebuilt from the records, when they carry it).
    ``field_types``: the candidate's :func:`output_types`, so typed outputs come back typed.
    """
    mine = sorted((r for r in records if r.candidate_id == candidate_id), key=lambda r: r.example_index)
    usages = [usage_of(r.usage) for r in mine]  # Usage is frozen: each is its prediction's and the sum's
    rows = [
        _example_result(r, _example(r, examples), field_types, u) for r, u in zip(mine, usages, strict=True)
    ]
    score = mean_score([r.score for r in rows])  # local Evaluate's rule, rounding included
    usage = _total(usages)
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


def _total(usages: Sequence[Usage]) -> Usage:
    """``sum(usages, Usage())`` (the same additions in the same order) without a Usage per step."""
    prompt = completion = calls = hits = 0
    cost = 0.0
    for usage in usages:
        prompt += usage.prompt_tokens
        completion += usage.completion_tokens
        cost += usage.cost_usd
        calls += usage.lm_calls
        hits += usage.cache_hits
    return Usage.model_construct(
        prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, lm_calls=calls, cache_hits=hits
    )


def _example(record: ScoreRecord, examples: Sequence[Example] | None) -> Example:
    if examples is not None and record.example_index < len(examples):
        return examples[record.example_index]
    return Example(record.example or {})


def _example_result(
    record: ScoreRecord, example: Example, field_types: Mapping[str, Any] | None, usage: Usage | None = None
) -> ExampleResult:
    return ExampleResult(
        index=record.example_index,
        example=example,
        prediction=_prediction(record, field_types, usage),
        score=record.score,
        feedback=record.feedback,
        error=None if record.error is None else f"{record.error.type}: {record.error.message}",
        latency_s=record.latency_s or 0.0,
        tool_calls=tuple(record.tool_calls or ()),
    )


def _prediction(
    record: ScoreRecord, field_types: Mapping[str, Any] | None = None, usage: Usage | None = None
) -> Prediction | None:
    if record.outputs is None:
        return None
    prediction = Prediction(coerce_outputs(record.outputs, field_types or {}))
    prediction._usage = usage if usage is not None else usage_of(record.usage)
    return prediction


# -- typed outputs ----------------------------------------------------------------------------------

# Annotations whose values JSON gives back as they were: nothing to rebuild.
_AS_JSON: frozenset[Any] = frozenset({str, Any, None, type(None)})


def output_types(program: Module) -> dict[str, Any]:
    """The declared type of every field of ``program`` that the records carry as plain JSON and
    local ``Evaluate`` gives typed (``int``, ``list[str]``, a pydantic model, ``dspex.History``,
    ``dspex.Image``...), by name; ``str`` and untyped fields are left out.

    Looked up in the program's own ``signature``, then its predictors' outputs, then their inputs
    (ReActV2 returns its predictor's ``history`` input); the first declaration of a name wins.
    """
    signatures = [getattr(program, "signature", None)]
    signatures += [getattr(predictor, "signature", None) for _, predictor in program.named_predictors()]
    fields: list[Mapping[str, Any]] = []
    for kind in ("output_fields", "input_fields"):
        fields += [getattr(sig, kind) for sig in signatures if isinstance(getattr(sig, kind, None), Mapping)]
    found: dict[str, Any] = {}
    for declared in fields:
        for name, info in declared.items():
            annotation = getattr(info, "annotation", None)
            if name not in found and not _plain(annotation):
                found[name] = annotation
    return found


def coerce_outputs(outputs: Mapping[str, Any], field_types: Mapping[str, Any]) -> dict[str, Any]:
    """``outputs`` with each JSON value rebuilt as its field's declared type (validated by pydantic,
    as an adapter's parse does); a value that does not validate is kept as it came (the record is
    still the truth, only less typed)."""
    coerced = dict(outputs)
    for name, annotation in field_types.items():
        value = coerced.get(name)
        if value is None:
            continue
        try:
            coerced[name] = _typed(annotation, value)
        except (pydantic.ValidationError, TypeError, ValueError) as exc:
            logger.debug("output %r is not a valid %s; kept as JSON: %s", name, annotation, exc)
    return coerced


def _plain(annotation: Any) -> bool:
    try:
        return annotation in _AS_JSON
    except TypeError:  # an unhashable annotation (a rare typing construct) is not plain
        return False


def _typed(annotation: Any, value: Any) -> Any:
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    model = _model_type(annotation)
    if model is not None and isinstance(value, str) and issubclass(model, Type):
        rebuilt = _from_marked(model, value)  # a dspex Type travels as its formatted text
        if rebuilt is not None:
            return rebuilt
    return _adapter(annotation).validate_python(value)


_ADAPTERS: dict[Any, pydantic.TypeAdapter[Any]] = {}


def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    """One TypeAdapter per annotation (building one is not cheap, and every record asks)."""
    try:
        adapter = _ADAPTERS.get(annotation)
    except TypeError:  # unhashable: built each time
        return pydantic.TypeAdapter(annotation)
    if adapter is None:
        adapter = _ADAPTERS[annotation] = pydantic.TypeAdapter(annotation)
    return adapter


def _from_marked(model: type[Type], text: str) -> Type | None:
    """A Type rebuilt from its marked content parts: an ``Image`` from its one ``image_url`` part."""
    if not (text.startswith(CUSTOM_TYPE_START_IDENTIFIER) and text.endswith(CUSTOM_TYPE_END_IDENTIFIER)):
        return None
    try:
        parts = json.loads(text[len(CUSTOM_TYPE_START_IDENTIFIER) : -len(CUSTOM_TYPE_END_IDENTIFIER)])
    except json.JSONDecodeError:
        return None
    if issubclass(model, Image) and isinstance(parts, list) and len(parts) == 1:
        url = (parts[0].get("image_url") or {}).get("url") if isinstance(parts[0], dict) else None
        return model(url=url) if isinstance(url, str) else None
    return None


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
