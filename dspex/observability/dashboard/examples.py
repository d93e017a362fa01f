"""Per-example views of an evaluation's score records: one row per example, and one example in full.

What is shown is what the records hold: the example (split into inputs and gold labels by the job's
input keys), the program's outputs, the score and the metric's feedback, the error, the trace (each
predictor call's inputs and outputs), every LM call with its messages, completion, tokens, cost,
latency and cache hit (``lm_call_log``, kept by the predictor unless it ran with
``--no-record-lm-calls``: :mod:`dspex.processors.lm_calls`), the callback events a worker recorded
(``--callback``), tokens, cost, LM calls, latency and the worker that ran it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from dspex.schemas.lm_calls import LMCallRecord
from dspex.schemas.results import ScoreRecord

__all__ = ["example_detail", "example_rows"]


def example_rows(records: Iterable[ScoreRecord], candidate_id: str | None = None) -> list[dict[str, Any]]:
    """One row per example (of one candidate when given), by candidate then example index."""
    chosen = [r for r in records if candidate_id is None or r.candidate_id == candidate_id]
    return [_row(record) for record in sorted(chosen, key=lambda r: (r.candidate_id, r.example_index))]


def example_detail(
    record: ScoreRecord, input_keys: Sequence[str], lm_calls: Sequence[LMCallRecord] | None = None
) -> dict[str, Any]:
    """One example in full; with no ``input_keys`` known, the whole example is under ``inputs``.

    ``lm_calls``: the example's LM calls when kept apart from ``record`` (else the record's)."""
    example = record.example or {}
    calls = record.lm_call_log if lm_calls is None else lm_calls
    keys = set(input_keys) if input_keys else set(example)
    return {
        **_row(record),
        "inputs": {k: v for k, v in example.items() if k in keys},
        "gold": {k: v for k, v in example.items() if k not in keys},
        "outputs": record.outputs,
        "feedback": record.feedback,
        "error": None if record.error is None else record.error.model_dump(mode="json"),
        "trace": [entry.model_dump(mode="json") for entry in record.trace],
        "lm_call_log": [call.model_dump(mode="json") for call in calls or []],
        "lm_calls_unlogged": record.lm_calls_unlogged or 0,
        "callback_events": [event.model_dump(mode="json") for event in record.callback_events or []],
        "tool_calls": [call.model_dump(mode="json") for call in record.tool_calls or []],
        "scored_by": record.worker_id,
        "task_id": record.task_id,
        "scored_at": record.scored_at.isoformat(),
    }


def _row(record: ScoreRecord) -> dict[str, Any]:
    return {
        "candidate_id": record.candidate_id,
        "example_index": record.example_index,
        "score": record.score,
        "failed": record.error is not None,
        "error_type": record.error.type if record.error is not None else None,
        "prompt_tokens": record.usage.prompt_tokens,
        "completion_tokens": record.usage.completion_tokens,
        "cost_usd": record.usage.cost_usd,
        "lm_calls": record.usage.lm_calls,
        "latency_s": record.latency_s,
        # the predictor that ran the example (a record from before 1.4 names its writer only)
        "worker_id": record.predicted_by or record.worker_id,
    }
