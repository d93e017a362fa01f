"""What an evaluation gives back: :class:`EvaluationResult` (DSPy's, a ``Prediction`` with ``score`` and
``results``) carrying dspex's per-example :class:`ExampleResult` records, and the file exports.

    result = evaluate(program)
    result.score                      # 100 x the mean score, rounded to 2 decimals (as DSPy)
    result.results                    # [(example, prediction, score), ...] in devset order
    result.records, result.usage, result.errors, result.stopped_early, result.to_json("run.json")
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspex.lm.usage import Usage
from dspex.primitives import Example, Prediction
from dspex.schemas.common import ToolCallRecord

__all__ = ["EvaluationResult", "ExampleResult", "dspy_rows", "mean_score", "write_csv", "write_json"]

_set_slot = object.__setattr__


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """One example's outcome. ``prediction`` is None when the program raised.

    ``tool_calls``: the agent's tool calls, each with its start (seconds into the example's run)
    and duration, in start order (:mod:`dspex.utils.tool_timings`); empty without tools.
    ``metric_value``: what the metric returned, as it returned it (a bool, a number, a
    ``Prediction(score=..., feedback=...)``...), which DSPy's ``results`` hold; None when the program or
    the metric raised, and for results read back from Kafka (a score record carries the number only).
    """

    index: int
    example: Example
    prediction: Prediction | None
    score: float
    feedback: str | None = None
    error: str | None = None
    latency_s: float = 0.0
    tool_calls: tuple[ToolCallRecord, ...] = ()
    metric_value: Any = None

    @property
    def result_score(self) -> Any:
        """The third item of this example's row in ``EvaluationResult.results``: the metric's own value
        where it is known (as DSPy keeps it), else the number."""
        return self.score if self.metric_value is None else self.metric_value

    @property
    def usage(self) -> Usage:
        """The prediction's own usage (its LM calls); empty when there is no prediction."""
        usage = getattr(self.prediction, "usage", None)
        return usage if isinstance(usage, Usage) else Usage()


def mean_score(scores: Sequence[float]) -> float:
    """DSPy's score: ``100 * sum / count`` rounded to 2 decimals (``math.fsum``: any order, same bits)."""
    return round(100.0 * math.fsum(scores) / len(scores), 2) if scores else 0.0


class EvaluationResult(Prediction):
    """What :class:`~dspex.Evaluate` returns: a ``Prediction`` with DSPy's two fields.

    - ``score``: 100 x the mean per-example score (``float(result)`` too);
    - ``results``: ``(example, prediction, score)`` per example, in devset order (a failed example has
      an empty ``Prediction()``, as in DSPy).

    dspex adds the per-example :attr:`records` (feedback, error, latency, usage), the run's
    :attr:`usage`, :attr:`errors`, :attr:`total`, :attr:`stopped_early` and :attr:`elapsed_s`.
    Built either DSPy's way, ``EvaluationResult(score=..., results=[...])``, or from records
    (``records=[...]``, what the Kafka client does, or :meth:`from_records`).
    """

    __slots__ = ("_elapsed_s", "_errors", "_metric", "_records", "_stopped_early", "_total")

    _records: list[ExampleResult]
    _errors: int
    _total: int
    _metric: str
    _stopped_early: bool
    _elapsed_s: float

    def __init__(
        self,
        score: float,
        results: Sequence[tuple[Any, Any, Any]] | None = None,
        *,
        records: Sequence[ExampleResult] | None = None,
        usage: Usage | None = None,
        errors: int | None = None,
        total: int | None = None,
        metric: str = "",
        stopped_early: bool = False,
        elapsed_s: float = 0.0,
    ) -> None:
        """``results`` (DSPy's form) or ``records`` (dspex's): the other is derived from the one given."""
        if records is None:
            records = [_record_from_result(i, row) for i, row in enumerate(results or ())]
        records = list(records)
        if results is None:
            results = [
                (r.example, Prediction() if r.prediction is None else r.prediction, r.result_score)
                for r in records
            ]
        super().__init__(score=score, results=list(results))
        _set_slot(self, "_usage", usage if usage is not None else Usage())
        _set_slot(self, "_records", records)
        _set_slot(
            self, "_errors", errors if errors is not None else sum(r.error is not None for r in records)
        )
        _set_slot(self, "_total", total if total is not None else len(records))
        _set_slot(self, "_metric", metric)
        _set_slot(self, "_stopped_early", stopped_early)
        _set_slot(self, "_elapsed_s", elapsed_s)

    @classmethod
    def from_records(
        cls,
        records: Sequence[ExampleResult],
        *,
        usage: Usage,
        total: int,
        metric: str,
        stopped_early: bool = False,
        elapsed_s: float = 0.0,
    ) -> EvaluationResult:
        """Build a result from per-example records in any order: the one place the score rule lives."""
        ordered = sorted(records, key=lambda r: r.index)
        return cls(
            mean_score([r.score for r in ordered]),
            records=ordered,
            usage=usage,
            total=total,
            metric=metric,
            stopped_early=stopped_early,
            elapsed_s=elapsed_s,
        )

    # -- DSPy's fields --------------------------------------------------------------------------

    @property
    def score(self) -> float:
        """100 x the mean per-example score (0 to 100)."""
        return float(self._store["score"])

    @property
    def results(self) -> list[tuple[Any, Any, Any]]:
        """``(example, prediction, score)`` per finished example, in example order (as in DSPy)."""
        results: list[tuple[Any, Any, Any]] = self._store["results"]
        return results

    # -- dspex's additions ----------------------------------------------------------------------

    @property
    def records(self) -> list[ExampleResult]:
        """One :class:`ExampleResult` per finished example, in example order."""
        return self._records

    @property
    def errors(self) -> int:
        """How many examples failed (the program or the metric raised)."""
        return self._errors

    @property
    def total(self) -> int:
        """How many examples the devset had."""
        return self._total

    @property
    def metric(self) -> str:
        """The metric's display name."""
        return self._metric

    @property
    def stopped_early(self) -> bool:
        """True when ``max_errors`` stopped the run before every example finished."""
        return self._stopped_early

    @property
    def elapsed_s(self) -> float:
        """Wall-clock seconds of the run."""
        return self._elapsed_s

    @property
    def processed(self) -> int:
        """How many examples finished (all of them unless ``stopped_early``)."""
        return len(self._records)

    @property
    def error_messages(self) -> dict[int, str]:
        """``{example index: "ErrorType: message"}`` for every example that failed."""
        return {r.index: r.error for r in self._records if r.error is not None}

    @property
    def examples_per_s(self) -> float:
        """Finished examples per second of wall-clock time."""
        return self.processed / self._elapsed_s if self._elapsed_s > 0 else 0.0

    def copy(self, **changes: Any) -> EvaluationResult:
        """A shallow copy (records, usage and counts shared), with ``changes`` applied to the fields."""
        fields = {"score": self.score, "results": self.results, **changes}
        copied = EvaluationResult(
            fields.pop("score"),
            fields.pop("results"),
            records=self._records,
            usage=self.usage,
            errors=self._errors,
            total=self._total,
            metric=self._metric,
            stopped_early=self._stopped_early,
            elapsed_s=self._elapsed_s,
        )
        copied._store.update(fields)
        return copied

    def __repr__(self) -> str:
        return f"EvaluationResult(score={self.score}, results=<list of {len(self.results)} results>)"

    # -- exports ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary plus one entry per finished example."""
        return {
            "score": self.score,
            "metric": self._metric,
            "total": self._total,
            "processed": self.processed,
            "errors": self._errors,
            "stopped_early": self._stopped_early,
            "elapsed_s": self._elapsed_s,
            "usage": self.usage.model_dump(),
            "results": [_record_dict(r) for r in self._records],
        }

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, default=_json_default), "utf-8")
        return path

    def to_csv(self, path: str | Path) -> Path:
        """One row per finished example: index, example fields, prediction fields, score, feedback, error.

        A field both sides have becomes ``example_NAME`` and ``pred_NAME`` (as DSPy's CSV does).
        """
        rows = [_csv_row(r, self._metric) for r in self._records]
        return _write_csv_rows(path, rows)


def _record_from_result(index: int, row: tuple[Any, Any, Any]) -> ExampleResult:
    example, prediction, score = row
    return ExampleResult(index, example, prediction, _number(score), metric_value=score)


def _number(score: Any) -> Any:
    # DSPy's results may hold bools or score-carrying predictions; keep what cannot be a number as is.
    try:
        return float(score)
    except (TypeError, ValueError):
        return score


# --------------------------------------------------------------------------- DSPy's export rows


def dspy_rows(results: Sequence[tuple[Any, Any, Any]], metric_name: str) -> list[dict[str, Any]]:
    """DSPy's ``save_as_csv``/``save_as_json``/table rows: example and prediction fields, then the score.

    A field both sides have becomes ``example_NAME`` and ``pred_NAME``; a prediction that is not
    dict-like goes in a ``prediction`` column.
    """
    rows = []
    for example, prediction, score in results:
        if callable(getattr(prediction, "items", None)):
            row = _merged(_fields(example), _fields(prediction))
        else:
            row = {**_fields(example), "prediction": prediction}
        rows.append({**row, metric_name: score})
    return rows


def _merged(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> dict[str, Any]:
    row = {f"example_{k}" if k in prediction else k: v for k, v in example.items()}
    row.update({f"pred_{k}" if k in example else k: v for k, v in prediction.items()})
    return row


def write_json(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """The rows as one JSON list (pydantic values such as ``History`` dumped to dicts)."""
    path = Path(path)
    path.write_text(json.dumps(rows, ensure_ascii=False, default=_json_default), "utf-8")
    return path


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """The rows as CSV, non-scalar cells as JSON text."""
    return _write_csv_rows(path, [{key: _cell(value) for key, value in row.items()} for row in rows])


def _write_csv_rows(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns or ["index"])
        writer.writeheader()
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------- dspex's export rows


def _fields(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    to_dict = getattr(obj, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else dict(obj)


def _record_dict(record: ExampleResult) -> dict[str, Any]:
    prediction = None if record.prediction is None else _fields(record.prediction)
    row = {
        "index": record.index,
        "example": _fields(record.example),
        "prediction": prediction,
        "score": record.score,
        "feedback": record.feedback,
        "error": record.error,
        "latency_s": record.latency_s,
        "usage": record.usage.model_dump(),
    }
    if record.tool_calls:  # agents only: other programs' rows stay as they were
        row["tool_calls"] = [call.model_dump() for call in record.tool_calls]
    return row


def _csv_row(record: ExampleResult, metric: str) -> dict[str, Any]:
    example, prediction = _fields(record.example), _fields(record.prediction)
    row: dict[str, Any] = {"index": record.index}
    row.update({key: _cell(value) for key, value in _merged(example, prediction).items()})
    row.update({metric: record.score, "feedback": record.feedback or "", "error": record.error or ""})
    return row


def _cell(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None) or getattr(value, "to_dict", None)
    return dump() if callable(dump) else str(value)
