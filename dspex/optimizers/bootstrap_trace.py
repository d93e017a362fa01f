"""DSPy's ``bootstrap_trace_data``: run a program on a dataset and keep each run's trace and score.

    from dspex.teleprompt.bootstrap_trace import FailedPrediction, bootstrap_trace_data

    data = bootstrap_trace_data(program, trainset, metric=metric, capture_failed_parses=True)
    data[0]["example"], data[0]["prediction"], data[0]["trace"], data[0]["score"]

Each entry is ``{example_ind, example, prediction, trace}`` (and ``score`` with a metric), in dataset
order; ``trace`` is DSPy's list of ``(predictor, inputs, outputs)`` tuples. The runs go through
:class:`~dspex.Evaluate` (``callback_metadata`` is handed to it). As in DSPy:

- ``capture_failed_parses``: an output the adapter cannot parse becomes a :class:`FailedPrediction`
  (the LM's text, a ``format_reward`` between ``format_failure_score`` and ``failure_score`` by the
  share of fields found), scored by that reward, with a last trace step for the failing predictor;
- ``capture_crashes``: any other exception of the program becomes a FailedPrediction too, except
  an :class:`~dspex.errors.LMError`, which is the endpoint's failure, not the program's: it stays
  an error of the evaluation;
- a run that still fails is dropped (``raise_on_error=False``) or raises ValueError (the default).

What differs: a failed run's trace holds only its failing step (dspex keeps the steps of a call
that raised nowhere).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from dspex.errors import AdapterParseError, LMError
from dspex.evaluate import Evaluate
from dspex.primitives import Example, Module, Prediction

__all__ = ["FailedPrediction", "TraceData", "bootstrap_trace_data"]

logger = logging.getLogger(__name__)

TraceEntry = tuple[Any, dict[str, Any], Any]


@dataclass
class FailedPrediction:
    """A run whose output could not be used: the LM's text (or the error), and a format reward."""

    completion_text: str
    format_reward: float | None = None


class TraceData(TypedDict, total=False):
    """One run of :func:`bootstrap_trace_data` (``score`` only with a metric)."""

    example_ind: int
    example: Example
    prediction: Prediction | FailedPrediction
    trace: list[TraceEntry]
    score: float | None


@dataclass(frozen=True)
class _Capture:
    capture_failed_parses: bool
    capture_crashes: bool
    failure_score: float
    format_failure_score: float
    log_format_failures: bool


class _Traced(Module):
    """Runs ``program``; returns a Prediction whose ``outcome`` is ``(prediction, trace)`` (Evaluate
    scores Predictions), failures captured as asked."""

    def __init__(self, program: Module, capture: _Capture) -> None:
        self.program = program
        self._capture = capture

    async def aforward(self, **inputs: Any) -> Prediction:
        return Prediction(outcome=await self._outcome(inputs))

    async def _outcome(self, inputs: dict[str, Any]) -> tuple[Any, list[TraceEntry]]:
        try:
            prediction = await self.program.acall(**inputs)
        except AdapterParseError as exc:
            if not self._capture.capture_failed_parses:
                raise
            return self._failed_parse(exc, inputs)
        except LMError:
            raise  # the endpoint failed, not the program: an error of the evaluation
        except Exception as exc:
            if not self._capture.capture_crashes:
                raise
            logger.warning("Program raised on an example; capturing it as a failed prediction: %s", exc)
            return FailedPrediction(completion_text=f"{type(exc).__name__}: {exc}"), []
        trace = getattr(prediction, "trace", None) or []
        entries = [(step.predictor, step.inputs, Prediction(**step.outputs)) for step in trace]
        return prediction, entries

    def _failed_parse(
        self, exc: AdapterParseError, inputs: dict[str, Any]
    ) -> tuple[FailedPrediction, list[TraceEntry]]:
        capture = self._capture
        predictor = next(
            (p for p in self.program.predictors() if p.signature == exc.signature),
            None,
        )
        if predictor is None:
            raise ValueError(
                f"Failed to find the predictor for the failed signature: {exc.signature}"
            ) from exc
        found = list(exc.parsed_result or {})
        expected = list(getattr(exc.signature, "output_fields", {}) or {})
        reward = capture.format_failure_score
        if found and expected:
            share = len(found) / len(expected)
            reward += (capture.failure_score - capture.format_failure_score) * share
        failed = FailedPrediction(completion_text=exc.lm_response, format_reward=reward)
        if capture.log_format_failures:
            logger.warning(
                "Failed to parse the LM output for an example (it does not follow the adapter's format)"
            )
        return failed, [(predictor, dict(inputs), failed)]


def bootstrap_trace_data(
    program: Module,
    dataset: Sequence[Example],
    metric: Callable[..., Any] | None = None,
    num_threads: int | None = None,
    raise_on_error: bool = True,
    capture_failed_parses: bool = False,
    failure_score: float = 0,
    format_failure_score: float = -1,
    log_format_failures: bool = False,
    callback_metadata: dict[str, Any] | None = None,
    capture_crashes: bool = False,
    display_progress: bool = True,
) -> list[TraceData]:
    """Every example's run: ``{example_ind, example, prediction, trace}`` and ``score`` with a metric.

    ``display_progress``: the evaluation's bar on stderr (DSPy's shows one); a caller making many
    small evaluations at once (GEPA's minibatches) turns it off."""
    capture = _Capture(
        capture_failed_parses, capture_crashes, failure_score, format_failure_score, log_format_failures
    )
    evaluator = Evaluate(
        devset=list(dataset),
        num_threads=num_threads,
        display_progress=display_progress,
        provide_traceback=False,
        max_errors=len(dataset) * 10,  # DSPy's bound: failures are data here, not a reason to stop
        failure_score=failure_score,
    )

    def scored(example: Example, result: Prediction, trace: Any = None) -> Any:
        prediction, _ = result.outcome
        if isinstance(prediction, FailedPrediction):
            return prediction.format_reward or format_failure_score
        return metric(example, prediction, trace) if metric else True

    results = evaluator(_Traced(program, capture), metric=scored, callback_metadata=callback_metadata).results
    return _entries(results, has_metric=metric is not None, raise_on_error=raise_on_error)


def _entries(results: Sequence[Any], *, has_metric: bool, raise_on_error: bool) -> list[TraceData]:
    data: list[TraceData] = []
    for index, (example, result, score) in enumerate(results):
        outcome = result.get("outcome") if isinstance(result, Prediction) else None
        if outcome is None:
            # The run failed (an empty Prediction in the results): no prediction and trace to keep.
            if raise_on_error:
                raise ValueError(f"example {index}: the run failed, so it has no prediction and trace")
            logger.warning("example %d: the run failed; it is left out of the trace data", index)
            continue
        prediction, trace = outcome
        entry: TraceData = {
            "example": example,
            "prediction": prediction,
            "trace": trace,
            "example_ind": index,
        }
        if has_metric:
            entry["score"] = score
        data.append(entry)
    return data
