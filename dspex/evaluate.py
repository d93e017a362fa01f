"""Local evaluation: run a program over a devset with bounded asyncio concurrency and score it.

    evaluate = dspex.Evaluate(devset=devset, metric=dspex.metrics.exact_match("answer"),
                              concurrency=256, display_progress=True)
    result = evaluate(program)            # or: await evaluate.acall(program)
    result.score, result.results, result.usage

Semantics, and where they differ from DSPy 3.4.1's ``dspy.Evaluate``:

- ``score`` is ``100 * sum(scores) / processed``. An example whose program or metric raised scores
  ``failure_score`` and stays in the denominator (as in DSPy). ``processed`` is every example when the
  run completes, as in DSPy. The sum is ``math.fsum``, so any order of the same scores gives the same
  bits (the distributed client relies on this). The score is not rounded (DSPy rounds to 2 decimals).
- ``max_errors`` (``None``: no limit): once MORE than ``max_errors`` examples have failed, no new
  example starts, the ones in flight are cancelled, and the partial result comes back with
  ``stopped_early=True``; its score is over the examples that finished. DSPy raises instead, and stops
  at the ``max_errors``-th error rather than the one after.
- A systemic error (an LM answering 401/403/404, or a :class:`ConfigurationError` such as no LM set)
  would fail every example the same way: it cancels the run and is raised.
- ``usage`` sums every LM call made during the run, retries and failed examples included (one
  ``track_usage()`` around the whole run; DSPy loses usage made in its worker threads).
- ``concurrency`` is the number of examples in flight; ``num_threads`` is accepted as DSPy's name.
- Programs: anything with ``async acall(**inputs)`` (every dspex module), an ``async def`` callable,
  or a plain sync callable (run in a worker thread). Metrics are called inline on the event loop (keep
  them cheap); a metric may be ``async``.
"""

from __future__ import annotations

import asyncio
import csv
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dspex._parallel import DEFAULT_CONCURRENCY, resolve_concurrency
from dspex._sync import run_in_thread, run_sync
from dspex.errors import ConfigurationError, InputError, LMError
from dspex.lm.usage import Usage, UsageTracker, track_usage
from dspex.metrics import metric_name, resolve_metric, score_of
from dspex.primitives import Example, Prediction

__all__ = ["DEFAULT_CONCURRENCY", "Evaluate", "EvaluationResult", "ExampleResult"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """One example's outcome. ``prediction`` is None when the program raised."""

    index: int
    example: Example
    prediction: Prediction | None
    score: float
    feedback: str | None = None
    error: str | None = None
    latency_s: float = 0.0

    @property
    def usage(self) -> Usage:
        """The prediction's own usage (its LM calls); empty when there is no prediction."""
        usage = getattr(self.prediction, "usage", None)
        return usage if isinstance(usage, Usage) else Usage()


@dataclass(frozen=True)
class EvaluationResult:
    """What :class:`Evaluate` returns; ``float(result)`` is the score."""

    score: float
    records: list[ExampleResult]
    usage: Usage
    errors: int
    total: int
    metric: str
    stopped_early: bool = False
    elapsed_s: float = 0.0

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
        """Build a result from per-example records in any order: the one place the score rule lives.

        The distributed client uses this too, so local and Kafka evaluations score identically.
        """
        ordered = sorted(records, key=lambda r: r.index)
        score = 100.0 * math.fsum(r.score for r in ordered) / len(ordered) if ordered else 0.0
        errors = sum(r.error is not None for r in ordered)
        return cls(score, ordered, usage, errors, total, metric, stopped_early, elapsed_s)

    @property
    def results(self) -> list[tuple[Example, Prediction | None, float]]:
        """``(example, prediction, score)`` per finished example, in example order (as in DSPy)."""
        return [(r.example, r.prediction, r.score) for r in self.records]

    @property
    def processed(self) -> int:
        """How many examples finished (all of them unless ``stopped_early``)."""
        return len(self.records)

    @property
    def error_messages(self) -> dict[int, str]:
        """``{example index: "ErrorType: message"}`` for every example that failed."""
        return {r.index: r.error for r in self.records if r.error is not None}

    @property
    def examples_per_s(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __float__(self) -> float:
        return self.score

    def __repr__(self) -> str:
        return (
            f"EvaluationResult(score={self.score:.2f}, processed={self.processed}/{self.total}, "
            f"errors={self.errors}, stopped_early={self.stopped_early})"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary plus one entry per finished example."""
        return {
            "score": self.score,
            "metric": self.metric,
            "total": self.total,
            "processed": self.processed,
            "errors": self.errors,
            "stopped_early": self.stopped_early,
            "elapsed_s": self.elapsed_s,
            "usage": self.usage.model_dump(),
            "results": [_record_dict(r) for r in self.records],
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
        rows = [_csv_row(r, self.metric) for r in self.records]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns or ["index"])
            writer.writeheader()
            writer.writerows(rows)
        return path


def _fields(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    to_dict = getattr(obj, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else dict(obj)


def _record_dict(record: ExampleResult) -> dict[str, Any]:
    prediction = None if record.prediction is None else _fields(record.prediction)
    return {
        "index": record.index,
        "example": _fields(record.example),
        "prediction": prediction,
        "score": record.score,
        "feedback": record.feedback,
        "error": record.error,
        "latency_s": record.latency_s,
        "usage": record.usage.model_dump(),
    }


def _csv_row(record: ExampleResult, metric: str) -> dict[str, Any]:
    example, prediction = _fields(record.example), _fields(record.prediction)
    row: dict[str, Any] = {"index": record.index}
    for key, value in example.items():
        row[f"example_{key}" if key in prediction else key] = _cell(value)
    for key, value in prediction.items():
        row[f"pred_{key}" if key in example else key] = _cell(value)
    row.update({metric: record.score, "feedback": record.feedback or "", "error": record.error or ""})
    return row


def _cell(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None) or getattr(value, "to_dict", None)
    return dump() if callable(dump) else str(value)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class _Config:
    devset: Sequence[Example]
    metric: Callable[..., Any]
    concurrency: int
    max_errors: int | None
    failure_score: float
    display_progress: bool
    display_table: bool | int
    save_as_json: str | Path | None
    save_as_csv: str | Path | None


_OVERRIDABLE = frozenset(_Config.__dataclass_fields__) | {"num_threads"}


def _check(config: _Config) -> _Config:
    if not config.devset:
        raise ConfigurationError("devset is empty: Evaluate needs at least one example")
    if config.max_errors is not None and (isinstance(config.max_errors, bool) or config.max_errors < 0):
        raise ConfigurationError(f"max_errors must be None or an integer >= 0, got {config.max_errors!r}")
    if not math.isfinite(config.failure_score):
        raise ConfigurationError(f"failure_score must be a finite number, got {config.failure_score!r}")
    return config


# --------------------------------------------------------------------------- Evaluate


class Evaluate:
    """Evaluate a program over a devset with a metric, many examples in flight at once."""

    def __init__(
        self,
        *,
        devset: Sequence[Example],
        metric: Any,
        concurrency: int | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        failure_score: float = 0.0,
        display_progress: bool = False,
        display_table: bool | int = False,
        save_as_json: str | Path | None = None,
        save_as_csv: str | Path | None = None,
    ) -> None:
        """``metric``: a callable, a built-in name (``"exact_match:answer"``) or an import path."""
        self._config = _check(
            _Config(
                devset=list(devset),
                metric=resolve_metric(metric),
                concurrency=resolve_concurrency(concurrency, num_threads),
                max_errors=max_errors,
                failure_score=float(failure_score),
                display_progress=display_progress,
                display_table=display_table,
                save_as_json=save_as_json,
                save_as_csv=save_as_csv,
            )
        )

    @property
    def devset(self) -> Sequence[Example]:
        return self._config.devset

    @property
    def metric(self) -> Callable[..., Any]:
        return self._config.metric

    @property
    def concurrency(self) -> int:
        return self._config.concurrency

    num_threads = concurrency

    def __call__(self, program: Any, **overrides: Any) -> EvaluationResult:
        """Sync form of :meth:`acall` (not from inside a running event loop: await ``acall`` there)."""
        return run_sync(self.acall(program, **overrides))

    async def acall(self, program: Any, **overrides: Any) -> EvaluationResult:
        """Evaluate ``program``; ``overrides`` replace constructor arguments for this call only."""
        config = self._with(overrides)
        result = await _run(config, program)
        _report(config, result)
        return result

    def _with(self, overrides: Mapping[str, Any]) -> _Config:
        unknown = sorted(set(overrides) - _OVERRIDABLE)
        if unknown:
            raise ConfigurationError(
                f"unknown Evaluate argument(s) {unknown}; accepted: {', '.join(sorted(_OVERRIDABLE))}"
            )
        changes = dict(overrides)
        if "concurrency" in changes or "num_threads" in changes:
            changes["concurrency"] = resolve_concurrency(
                changes.get("concurrency"), changes.pop("num_threads", None)
            )
        if "metric" in changes:
            changes["metric"] = resolve_metric(changes["metric"])
        if "devset" in changes:
            changes["devset"] = list(changes["devset"])
        return _check(replace(self._config, **changes)) if changes else self._config


# --------------------------------------------------------------------------- the run


class _StopEarly(Exception):
    """Raised by the worker that saw one error too many; ends the run with partial results."""


class _Run:
    """The state of one evaluation: workers pull example indices and record outcomes."""

    def __init__(self, config: _Config, program: Any, tracker: UsageTracker, progress: _Progress) -> None:
        self.config = config
        self.call = _program_caller(program)
        self.inputs = [_inputs_of(example, i) for i, example in enumerate(config.devset)]
        self.tracker = tracker
        self.progress = progress
        self.records: dict[int, ExampleResult] = {}
        self.errors = 0
        self.score_sum = 0.0
        self.workers: list[asyncio.Task[None]] = []
        self._indices: Iterator[int] = iter(range(len(config.devset)))

    async def worker(self) -> None:
        for index in self._indices:  # one iterator shared by every worker: each index runs once
            self._record(await self._one(index))

    async def _one(self, index: int) -> ExampleResult:
        example, started = self.config.devset[index], time.perf_counter()
        try:
            prediction = _as_prediction(await self.call(self.inputs[index]))
        except Exception as exc:
            _raise_if_systemic(exc)
            return self._failed(index, None, exc, started)
        try:
            value = self.config.metric(example, prediction)
            score, feedback = score_of(await value if inspect.isawaitable(value) else value)
        except Exception as exc:
            return self._failed(index, prediction, exc, started)
        return ExampleResult(index, example, prediction, score, feedback, None, time.perf_counter() - started)

    def _failed(
        self, index: int, prediction: Prediction | None, exc: Exception, started: float
    ) -> ExampleResult:
        logger.debug("example %d failed", index, exc_info=exc)
        error = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        return ExampleResult(
            index, self.config.devset[index], prediction, self.config.failure_score, None, error, elapsed
        )

    def _record(self, record: ExampleResult) -> None:
        self.records[record.index] = record
        self.score_sum += record.score
        self.errors += record.error is not None
        self.progress.advance(self)
        limit = self.config.max_errors
        if record.error is not None and limit is not None and self.errors > limit:
            self._stop_others()
            raise _StopEarly

    def _stop_others(self) -> None:
        # Cancel now, not when _drive wakes up: workers already scheduled in this loop turn would
        # otherwise finish and record more examples after the limit was crossed.
        me = asyncio.current_task()
        for worker in self.workers:
            if worker is not me:
                worker.cancel()

    def result(self, *, stopped_early: bool, elapsed_s: float) -> EvaluationResult:
        return EvaluationResult.from_records(
            list(self.records.values()),
            usage=self.tracker.usage,
            total=len(self.config.devset),
            metric=metric_name(self.config.metric),
            stopped_early=stopped_early,
            elapsed_s=elapsed_s,
        )


async def _run(config: _Config, program: Any) -> EvaluationResult:
    started = time.perf_counter()
    with track_usage() as tracker, _Progress(config) as progress:
        run = _Run(config, program, tracker, progress)
        count = min(config.concurrency, len(config.devset))
        run.workers = [asyncio.create_task(run.worker()) for _ in range(count)]
        stopped_early = await _drive(run.workers)
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


def _raise_if_systemic(exc: Exception) -> None:
    # Every example would fail the same way: stop at once and say why, rather than score 0.
    if isinstance(exc, ConfigurationError) or (isinstance(exc, LMError) and exc.systemic):
        raise exc


def _program_caller(program: Any) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    acall = getattr(program, "acall", None)
    if callable(acall):
        return lambda inputs: acall(**inputs)
    if inspect.iscoroutinefunction(program) or inspect.iscoroutinefunction(type(program).__call__):
        return lambda inputs: program(**inputs)
    if callable(program):
        return lambda inputs: run_in_thread(program, **inputs)
    raise ConfigurationError(
        f"cannot evaluate {type(program).__name__}: a program needs `async acall(**inputs)` "
        "or must be callable"
    )


def _as_prediction(output: Any) -> Prediction:
    if isinstance(output, Prediction):
        return output
    if isinstance(output, Mapping):
        return Prediction(output)
    # a ConfigurationError is systemic: the program would return the same kind of thing every time
    raise ConfigurationError(
        f"the program returned {type(output).__name__}; return a Prediction or a mapping of outputs"
    )


def _inputs_of(example: Example, index: int) -> dict[str, Any]:
    if not isinstance(example, Example):
        raise InputError(f"devset item {index} is a {type(example).__name__}, not a dspex.Example")
    try:
        return dict(example.inputs().items())
    except InputError as exc:
        raise InputError(f"devset example {index}: {exc}") from exc


# --------------------------------------------------------------------------- display and reporting


class _Progress:
    """A rich progress bar on stderr with running score, tokens, cost and rate; a no-op when off."""

    def __init__(self, config: _Config) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._total = len(config.devset)
        self._started = time.perf_counter()
        if config.display_progress:
            self._bar = _progress_bar()

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
            fields = {"score": 0.0, "errors": 0, "tokens": 0, "cost": 0.0, "rate": 0.0}
            self._task = self._bar.add_task("Evaluate", total=self._total, **fields)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, run: _Run) -> None:
        if self._bar is not None:
            elapsed = time.perf_counter() - self._started
            self._bar.update(self._task, advance=1, **_fields_of(run, elapsed))


def _fields_of(run: _Run, elapsed: float) -> dict[str, Any]:
    usage, done = run.tracker.usage, len(run.records)
    return {
        "score": 100.0 * run.score_sum / done,
        "errors": run.errors,
        "tokens": usage.total_tokens,
        "cost": usage.cost_usd,
        "rate": done / elapsed if elapsed > 0 else 0.0,
    }


def _progress_bar() -> Any:
    from rich.console import Console  # rich only when a bar is asked for: keeps `import dspex` light
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("score {task.fields[score]:.1f}%"),
        TextColumn("errors {task.fields[errors]}"),
        TextColumn("{task.fields[tokens]:,} tokens"),
        TextColumn("${task.fields[cost]:.4f}"),
        TextColumn("{task.fields[rate]:.0f} ex/s"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        refresh_per_second=4,
    )


def _report(config: _Config, result: EvaluationResult) -> None:
    logger.info(
        "Evaluate %s: %.2f%% over %d/%d examples (%d errors%s) in %.1f s",
        result.metric,
        result.score,
        result.processed,
        result.total,
        result.errors,
        ", stopped early" if result.stopped_early else "",
        result.elapsed_s,
    )
    if config.display_table:
        _print_table(result, None if config.display_table is True else int(config.display_table))
    if config.save_as_json is not None:
        result.to_json(config.save_as_json)
    if config.save_as_csv is not None:
        result.to_csv(config.save_as_csv)


def _print_table(result: EvaluationResult, limit: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = result.records if limit is None else result.records[:limit]
    rows = [_csv_row(r, result.metric) for r in shown]
    table = Table(title=f"{result.metric}: {result.score:.2f}% ({result.processed}/{result.total})")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_short(row.get(column, "")) for column in columns))
    console = Console()
    console.print(table)
    if limit is not None and len(result.records) > limit:
        console.print(f"... {len(result.records) - limit} more rows not displayed ...")


def _short(value: Any, width: int = 80) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
