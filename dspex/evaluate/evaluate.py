"""Local evaluation: run a program over a devset and score it with a metric (DSPy's ``Evaluate``).

    evaluate = dspex.Evaluate(devset=devset, metric=answer_exact_match, num_threads=16,
                              display_progress=True)
    result = evaluate(program)            # or: await evaluate.acall(program)
    result.score, result.results          # DSPy's fields
    result.usage, result.records, result.stopped_early

Arguments, defaults and results are DSPy 3.4.1's. How it runs, and where it differs:

- ``num_threads`` (dspex's name: ``concurrency``) is the number of examples in flight, on one asyncio
  event loop rather than threads; ``None`` means ``dspex.settings.num_threads``. With 1, a sync call
  runs the examples one after another on the calling thread, program and metric alike (as DSPy's).
- ``score`` is ``100 * sum(scores) / processed`` rounded to 2 decimals (as DSPy); an example whose
  program or metric raised scores ``failure_score`` and stays in the denominator. The sum is
  ``math.fsum``, so any order of the same scores gives the same bits (the distributed client relies
  on this).
- ``max_errors`` (``None``: ``dspex.settings.max_errors``): once MORE than ``max_errors`` examples have
  failed, no new example starts, the ones in flight are cancelled, and the partial result comes back
  with ``stopped_early=True``; its score is over the examples that finished. DSPy raises instead.
- A systemic error (an LM answering 401/403/404, or a :class:`ConfigurationError` such as no LM set)
  would fail every example the same way: it stops the run and is raised.
- ``usage`` sums every LM call made during the run, retries and failed examples included.
- Programs: anything with ``async acall(**inputs)`` (every dspex module), an ``async def`` callable,
  or a plain sync callable (run in a worker thread); it must return a Prediction or a mapping.
  Metrics run on the event loop (keep them cheap); a metric may be ``async`` or a dspex Module
  (``SemanticF1``), awaited through its ``acall``.
- ``save_as_csv`` / ``save_as_json`` write DSPy's rows (example fields, prediction fields, the metric
  column); :meth:`EvaluationResult.to_json` / ``to_csv`` write dspex's fuller record of the run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dspex._parallel import DEFAULT_CONCURRENCY, resolve_concurrency
from dspex._sync import run_sync
from dspex.adapters.types.image import check_images
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError
from dspex.evaluate._calls import (
    ametric,
    as_prediction,
    inputs_of,
    program_caller,
    raise_if_systemic,
    sync_caller,
)
from dspex.evaluate.display import Progress, construct_result_table, print_result_table
from dspex.evaluate.result import EvaluationResult, ExampleResult, dspy_rows, write_csv, write_json
from dspex.lm.usage import UsageTracker, track_totals
from dspex.metrics import MetricLike, metric_name, resolve_metric, score_of
from dspex.primitives import Example, Prediction
from dspex.utils.callback import ExampleHearing, ExampleRunner, example_hearing, with_callbacks
from dspex.utils.tool_timings import ToolTimingLog, tool_timings

__all__ = ["DEFAULT_CONCURRENCY", "Evaluate", "EvaluationResult", "ExampleResult"]

logger = logging.getLogger(__name__)

# Call-time overrides dspex takes besides DSPy's named ones.
_EXTRA_OVERRIDES = frozenset({"concurrency", "failure_score", "max_errors", "provide_traceback"})


@dataclass(frozen=True)
class _Config:
    """Everything one run uses, resolved from the constructor, the call and the settings."""

    devset: Sequence[Example]
    metric: Callable[..., Any]
    concurrency: int
    max_errors: int | None
    failure_score: float
    provide_traceback: bool
    display_progress: bool
    display_table: bool | int
    save_as_json: str | Path | None
    save_as_csv: str | Path | None


# --------------------------------------------------------------------------- Evaluate


class Evaluate:
    """Evaluate a program over a devset with a metric, many examples in flight at once.

    >>> evaluate = Evaluate(devset=devset, metric=answer_exact_match, num_threads=8)
    >>> evaluate(program).score
    87.5
    """

    callback_kind: ClassVar[str] = "evaluate"  # callbacks hear on_evaluate_start / on_evaluate_end

    def __init__(
        self,
        *,
        devset: Sequence[Example],
        metric: MetricLike | None = None,
        num_threads: int | None = None,
        display_progress: bool = False,
        display_table: bool | int = False,
        max_errors: int | None = None,
        provide_traceback: bool | None = None,
        failure_score: float = 0.0,
        save_as_csv: str | Path | None = None,
        save_as_json: str | Path | None = None,
        concurrency: int | None = None,
        **kwargs: Any,
    ) -> None:
        """``metric``: a callable, a built-in name (``"exact_match:answer"``) or an import path.

        ``concurrency`` is dspex's name for ``num_threads``. Raises :class:`ConfigurationError` (a
        ``ValueError``) for ``return_outputs`` (DSPy dropped it: results are always returned).
        """
        _check_legacy_kwargs(kwargs)
        if metric is not None:
            resolve_metric(metric)  # a bad name fails here, not at the first call
        self.devset = list(devset)
        self.metric = metric
        self.num_threads = _bound(concurrency, num_threads)
        self.display_progress = display_progress
        self.display_table = display_table
        self.max_errors = _check_max_errors(max_errors)
        self.provide_traceback = provide_traceback
        self.failure_score = _check_failure_score(failure_score)
        self.save_as_csv = save_as_csv
        self.save_as_json = save_as_json

    @property
    def concurrency(self) -> int | None:
        """dspex's name for :attr:`num_threads` (None: ``dspex.settings.num_threads`` at call time)."""
        return self.num_threads

    @concurrency.setter
    def concurrency(self, value: int | None) -> None:
        self.num_threads = _bound(value, None)

    @with_callbacks
    def __call__(
        self,
        program: Any,
        metric: MetricLike | None = None,
        devset: Sequence[Example] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int | None = None,
        callback_metadata: dict[str, Any] | None = None,
        save_as_csv: str | Path | None = None,
        save_as_json: str | Path | None = None,
        **overrides: Any,
    ) -> EvaluationResult:
        """Evaluate ``program``; an argument given here replaces the constructor's for this call.

        ``overrides`` may also be ``concurrency``, ``failure_score``, ``max_errors`` or
        ``provide_traceback``. Inside async code, ``await`` :meth:`acall` instead.
        """
        given = _named(
            metric, devset, num_threads, display_progress, display_table, save_as_csv, save_as_json
        )
        config = self._config({**given, **overrides}, callback_metadata)
        if config.concurrency == 1:
            result = _run_sequential(config, program)
        else:
            result = run_sync(_run(config, program))
        _report(config, result)
        return result

    @with_callbacks
    async def acall(
        self,
        program: Any,
        metric: MetricLike | None = None,
        devset: Sequence[Example] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int | None = None,
        callback_metadata: dict[str, Any] | None = None,
        save_as_csv: str | Path | None = None,
        save_as_json: str | Path | None = None,
        **overrides: Any,
    ) -> EvaluationResult:
        """Async :meth:`__call__` (the examples run on the caller's event loop)."""
        given = _named(
            metric, devset, num_threads, display_progress, display_table, save_as_csv, save_as_json
        )
        config = self._config({**given, **overrides}, callback_metadata)
        result = await _run(config, program)
        _report(config, result)
        return result

    def _construct_result_table(self, results: Sequence[tuple[Any, Any, Any]], metric_name: str) -> Any:
        """DSPy's pandas DataFrame of ``results`` (needs pandas; the name is DSPy's, tools patch it)."""
        return construct_result_table(dspy_rows(results, metric_name))

    @staticmethod
    def _prepare_results_output(
        results: Sequence[tuple[Any, Any, Any]], metric_name: str
    ) -> list[dict[str, Any]]:
        """DSPy's rows for the table and the CSV/JSON files."""
        return dspy_rows(results, metric_name)

    def _config(self, given: Mapping[str, Any], callback_metadata: Mapping[str, Any] | None) -> _Config:
        unknown = sorted(set(given) - _EXTRA_OVERRIDES - set(_NAMED))
        if unknown:
            accepted = ", ".join(sorted({*_NAMED, *_EXTRA_OVERRIDES}))
            raise ConfigurationError(f"unknown Evaluate argument(s) {unknown}; accepted: {accepted}")
        if callback_metadata:
            logger.debug("Evaluate is called with callback metadata: %s", callback_metadata)
        settings = current_settings()
        devset = list(given.get("devset", self.devset))
        if not devset:
            raise ConfigurationError("devset must contain at least one example, got an empty devset")
        metric = given.get("metric", self.metric)
        if metric is None:
            raise ConfigurationError("Evaluate needs a metric: pass metric= to Evaluate or to the call")
        bound = _bound(given.get("concurrency"), given.get("num_threads")) or self.num_threads
        max_errors = _check_max_errors(given.get("max_errors", self.max_errors))
        traceback = given.get("provide_traceback", self.provide_traceback)
        return _Config(
            devset=devset,
            metric=resolve_metric(metric),
            concurrency=bound or settings.num_threads,
            max_errors=settings.max_errors if max_errors is None else max_errors,
            failure_score=_check_failure_score(given.get("failure_score", self.failure_score)),
            provide_traceback=bool(settings.provide_traceback if traceback is None else traceback),
            display_progress=given.get("display_progress", self.display_progress),
            display_table=given.get("display_table", self.display_table),
            save_as_json=given.get("save_as_json", self.save_as_json),
            save_as_csv=given.get("save_as_csv", self.save_as_csv),
        )


_NAMED = (
    "metric",
    "devset",
    "num_threads",
    "display_progress",
    "display_table",
    "save_as_csv",
    "save_as_json",
)


def _named(*values: Any) -> dict[str, Any]:
    """DSPy's call arguments that were given (None means "use the constructor's")."""
    return {name: value for name, value in zip(_NAMED, values, strict=True) if value is not None}


def _check_legacy_kwargs(kwargs: Mapping[str, Any]) -> None:
    if "return_outputs" in kwargs:
        raise ConfigurationError(
            "`return_outputs` is no longer supported. Results are always returned inside the `results` "
            "field of the `EvaluationResult` object."
        )
    # DSPy accepts and ignores anything else (return_all_scores included): say so instead.
    if kwargs:
        logger.warning(
            "Evaluate ignores %s: per-example scores and outputs are always in `result.results`",
            ", ".join(sorted(kwargs)),
        )


def _bound(concurrency: int | None, num_threads: int | None) -> int | None:
    """The examples-in-flight bound if one was given (checked), else None."""
    if concurrency is None and num_threads is None:
        return None
    return resolve_concurrency(concurrency, num_threads)


def _check_max_errors(max_errors: int | None) -> int | None:
    if max_errors is not None and (
        isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 0
    ):
        raise ConfigurationError(f"max_errors must be None or an integer >= 0, got {max_errors!r}")
    return max_errors


def _check_failure_score(failure_score: float) -> float:
    if not math.isfinite(failure_score):
        raise ConfigurationError(f"failure_score must be a finite number, got {failure_score!r}")
    return float(failure_score)


# --------------------------------------------------------------------------- the run


class _Run:
    """The state of one evaluation, whichever way it runs: inputs, records and running totals."""

    def __init__(self, config: _Config, tracker: UsageTracker, progress: Progress) -> None:
        self.config = config
        self.inputs = [inputs_of(example, i) for i, example in enumerate(config.devset)]
        self.tracker = tracker
        self.progress = progress
        self.records: dict[int, ExampleResult] = {}
        self.errors = 0
        self.score_sum = 0.0

    def scored(
        self, index: int, prediction: Prediction, value: Any, started: float, tools: ToolTimingLog
    ) -> ExampleResult:
        """The record of an example the metric scored ``value`` (raises if ``value`` is no score)."""
        score, feedback = score_of(value)
        latency = time.perf_counter() - started
        example = self.config.devset[index]
        calls = tuple(tools.records())
        return ExampleResult(index, example, prediction, score, feedback, None, latency, calls, value)

    def failed(
        self, index: int, prediction: Prediction | None, exc: Exception, started: float, tools: ToolTimingLog
    ) -> ExampleResult:
        """The record of an example whose program or metric raised ``exc``."""
        example = self.config.devset[index]
        if self.config.provide_traceback:
            logger.error("Error for %r: %s", example, exc, exc_info=exc)
        else:
            logger.error("Error for %r: %s. Set `provide_traceback=True` for traceback.", example, exc)
        error = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        calls = tuple(tools.records())
        return ExampleResult(
            index, example, prediction, self.config.failure_score, None, error, elapsed, calls
        )

    def record(self, record: ExampleResult) -> bool:
        """Keep ``record``; True when it is one error more than ``max_errors`` allows."""
        self.records[record.index] = record
        self.score_sum += record.score
        self.errors += record.error is not None
        usage = self.tracker.usage
        self.progress.advance(
            done=len(self.records), score_sum=self.score_sum, errors=self.errors, usage=usage
        )
        limit = self.config.max_errors
        return record.error is not None and limit is not None and self.errors > limit

    def result(self, *, stopped_early: bool, elapsed_s: float) -> EvaluationResult:
        return EvaluationResult.from_records(
            list(self.records.values()),
            usage=self.tracker.usage,
            total=len(self.config.devset),
            metric=metric_name(self.config.metric),
            stopped_early=stopped_early,
            elapsed_s=elapsed_s,
        )


def _progress(config: _Config) -> Progress:
    """The run's bar, and with MLflow logging on its progress as steps of its run."""
    listener = None
    if current_settings().mlflow is not None:
        from dspex.tracking import local_evaluation_progress

        listener = local_evaluation_progress()
    return Progress(len(config.devset), config.display_progress, listener)


# -- one after another, on the calling thread (num_threads=1, sync call) ----------------------------


def _run_sequential(config: _Config, program: Any) -> EvaluationResult:
    started = time.perf_counter()
    call = sync_caller(program)
    stopped_early = False
    hearing = example_hearing(program)
    with track_totals() as tracker, _progress(config) as progress, _running(hearing) as examples:
        run = _Run(config, tracker, progress)
        for index in range(len(config.devset)):
            if run.record(_one_sync(run, call, index, examples)):
                stopped_early = True
                break
    return run.result(stopped_early=stopped_early, elapsed_s=time.perf_counter() - started)


def _running(hearing: ExampleHearing | None) -> AbstractContextManager[ExampleRunner | None]:
    """Around one worker's examples: what a callback taking them one by one needs (usually none)."""
    return nullcontext() if hearing is None else hearing.running()


_UNHEARD: AbstractContextManager[None] = nullcontext()


def _heard(
    examples: ExampleRunner | None, inputs: dict[str, Any], started: float
) -> AbstractContextManager[None]:
    """Around one example's program call: told to ``examples`` when a callback takes them one by one."""
    return _UNHEARD if examples is None else _HeardExample(examples, inputs, started)


class _HeardExample(AbstractContextManager[None]):
    """:meth:`ExampleRunner.begin` before the program call; :meth:`ExampleRunner.end` after it when
    ``begin`` gave a token, and always when the call raised (cancellation included)."""

    __slots__ = ("_examples", "_inputs", "_started", "_token")

    def __init__(self, examples: ExampleRunner, inputs: dict[str, Any], started: float) -> None:
        self._examples, self._inputs, self._started = examples, inputs, started
        self._token: object | None = None

    def __enter__(self) -> None:
        self._token = self._examples.begin()

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        if error is not None or self._token is not None:
            self._examples.end(self._token, self._inputs, self._started, error)


def _one_sync(
    run: _Run, call: Callable[[dict[str, Any]], Any], index: int, examples: ExampleRunner | None
) -> ExampleResult:
    example, started, tools = run.config.devset[index], time.perf_counter(), ToolTimingLog()
    inputs = run.inputs[index]
    try:
        with tool_timings(tools):
            with _heard(examples, inputs, started):
                output = call(inputs)
            prediction = as_prediction(output)
    except Exception as exc:
        raise_if_systemic(exc)
        return run.failed(index, None, exc, started, tools)
    try:
        value = run.config.metric(example, prediction)
        return run.scored(
            index, prediction, run_sync(value) if inspect.iscoroutine(value) else value, started, tools
        )
    except Exception as exc:
        return run.failed(index, prediction, exc, started, tools)


# -- many at once, on an event loop ---------------------------------------------------------------


class _StopEarly(Exception):
    """Raised by the worker that saw one error too many; ends the run with partial results."""


class _AsyncRun:
    """Workers pull example indices from one shared iterator and record outcomes."""

    def __init__(self, run: _Run, program: Any) -> None:
        self.run = run
        self.call = program_caller(program)
        self.workers: list[asyncio.Task[None]] = []
        self._indices: Iterator[int] = iter(range(len(run.config.devset)))
        # asked here, inside the evaluation's own (announced) call: tracing takes the examples one
        # by one, so that an unsampled one is announced to nothing
        self.hearing = example_hearing(program)

    async def worker(self) -> None:
        with _running(self.hearing) as examples:
            for index in self._indices:  # one iterator shared by every worker: each index runs once
                if self.run.record(await self._one(index, examples)):
                    self._stop_others()
                    raise _StopEarly

    async def _one(self, index: int, examples: ExampleRunner | None) -> ExampleResult:
        example, started, tools = self.run.config.devset[index], time.perf_counter(), ToolTimingLog()
        inputs = self.run.inputs[index]
        try:
            # an unreadable image fails its example, naming it, before any LM call (as the cluster's
            # client refuses it before submitting)
            check_images(inputs, f"example {index}")
            with tool_timings(tools):
                with _heard(examples, inputs, started):
                    output = await self.call(inputs)
                prediction = as_prediction(output)
        except Exception as exc:
            raise_if_systemic(exc)
            return self.run.failed(index, None, exc, started, tools)
        try:
            value = await ametric(self.run.config.metric, example, prediction)
            return self.run.scored(index, prediction, value, started, tools)
        except Exception as exc:
            return self.run.failed(index, prediction, exc, started, tools)

    def _stop_others(self) -> None:
        # Cancel now, not when _drive wakes up: workers already scheduled in this loop turn would
        # otherwise finish and record more examples after the limit was crossed.
        me = asyncio.current_task()
        for worker in self.workers:
            if worker is not me:
                worker.cancel()


async def _run(config: _Config, program: Any) -> EvaluationResult:
    started = time.perf_counter()
    with track_totals() as tracker, _progress(config) as progress:
        run = _Run(config, tracker, progress)
        runner = _AsyncRun(run, program)
        count = min(config.concurrency, len(config.devset))
        runner.workers = [asyncio.create_task(runner.worker()) for _ in range(count)]
        stopped_early = await _drive(runner.workers)
    return run.result(stopped_early=stopped_early, elapsed_s=time.perf_counter() - started)


async def _drive(workers: list[asyncio.Task[None]]) -> bool:
    """Wait for the workers; on the first failure cancel the rest. True when stopped by max_errors."""
    try:
        done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    failures = [exc for w in done if not w.cancelled() and (exc := w.exception()) is not None]
    fatal = [exc for exc in failures if not isinstance(exc, _StopEarly)]
    if fatal:
        raise fatal[0]
    return bool(failures)


# --------------------------------------------------------------------------- reporting


def _report(config: _Config, result: EvaluationResult) -> None:
    total = math.fsum(r.score for r in result.records)
    logger.info(
        "Average Metric: %s / %d (%s%%)%s",
        round(total, 2),
        result.processed,
        round(100 * total / result.processed, 1) if result.processed else 0.0,
        f", stopped early after {result.errors} errors" if result.stopped_early else "",
    )
    if not (config.display_table or config.save_as_csv or config.save_as_json):
        return
    rows = dspy_rows(result.results, result.metric)
    if config.display_table:
        print_result_table(rows, result.metric, config.display_table)
    if config.save_as_csv:
        write_csv(config.save_as_csv, rows)
    if config.save_as_json:
        write_json(config.save_as_json, rows)
