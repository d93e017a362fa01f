"""Running many calls at once with a bound on how many are in flight: the engine of ``Parallel``
and ``Module.batch``.

It sits below the programming model (no import of :mod:`dspex.primitives`), so that ``Module.batch``
and :class:`dspex.modules.Parallel` can both use it. Semantics, shared by both:

- at most ``concurrency`` calls are in flight (``num_threads`` is accepted as DSPy's name for it);
  results come back in input order, a failed call's result is None;
- ``max_errors`` (None: no limit): once MORE than ``max_errors`` calls have failed, the calls in flight
  are cancelled and the error that crossed the limit is raised (DSPy raises too);
- a systemic error (a :class:`~dspex.errors.ConfigurationError`, or an LM error that would repeat for
  every call, such as 401/404) is raised at once, since every other call would fail the same way.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from dspex.errors import ConfigurationError, InputError, LMError

__all__ = [
    "DEFAULT_CONCURRENCY",
    "BatchOutcome",
    "call_inputs",
    "own_usage_tracker",
    "resolve_concurrency",
    "run_bounded",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The same default as Evaluate's: calls are coroutines, so a few dozen in flight cost little.
DEFAULT_CONCURRENCY: Final = 64


@dataclass
class BatchOutcome(Generic[T]):
    """What a bounded run gives back: results in input order (None where a call failed) and failures."""

    results: list[T | None]
    failed_indices: list[int] = field(default_factory=list)
    exceptions: list[Exception] = field(default_factory=list)

    def packaged(
        self, inputs: Sequence[Any], return_failed: bool
    ) -> list[T | None] | tuple[list[T | None], list[Any], list[Exception]]:
        """The results, or with ``return_failed`` DSPy's ``(results, failed_inputs, exceptions)``."""
        if not return_failed:
            return self.results
        order = sorted(range(len(self.failed_indices)), key=lambda i: self.failed_indices[i])
        failed = [inputs[self.failed_indices[i]] for i in order]
        return self.results, failed, [self.exceptions[i] for i in order]


def own_usage_tracker() -> AbstractContextManager[Any]:
    """A block in which one parallel call has its own ``settings.usage_tracker``: a copy of the one
    open here (DSPy gives each worker thread a copy, so ``get_total_tokens()`` inside a call is that
    call's own usage). The LM calls made inside still count in the trackers open here too."""
    from dspex.lm.usage import current_usage_tracker, track_usage

    tracker = current_usage_tracker()
    return nullcontext() if tracker is None else track_usage(copy.deepcopy(tracker))


def resolve_concurrency(concurrency: int | None, num_threads: int | None) -> int:
    """The bound from ``concurrency`` or DSPy's ``num_threads`` (they must agree if both are given)."""
    if concurrency is not None and num_threads is not None and concurrency != num_threads:
        raise ConfigurationError(
            f"concurrency={concurrency} and num_threads={num_threads} disagree; num_threads is DSPy's "
            "name for concurrency: pass one of them"
        )
    value = concurrency if concurrency is not None else num_threads
    value = DEFAULT_CONCURRENCY if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"concurrency must be a positive integer, got {value!r}")
    return value


def check_max_errors(max_errors: int | None) -> int | None:
    """``max_errors`` validated: None or an integer >= 0."""
    if max_errors is not None and (
        isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 0
    ):
        raise ConfigurationError(f"max_errors must be None or an integer >= 0, got {max_errors!r}")
    return max_errors


def call_inputs(example: Any, index: int) -> dict[str, Any]:
    """The keyword inputs for one call: an Example's marked inputs, or a mapping's items."""
    if hasattr(example, "inputs") and hasattr(example, "input_keys"):
        if example.input_keys is None:
            raise InputError(
                f"input #{index} ({example!r}) has no input fields marked; use example.with_inputs(...)"
            )
        return dict(example.inputs().items())
    if isinstance(example, Mapping):
        return dict(example)
    raise InputError(f"input #{index} is a {type(example).__name__}; pass dspex.Example objects or dicts")


async def run_bounded(
    calls: Sequence[Callable[[], Awaitable[T]]], *, concurrency: int, max_errors: int | None = None
) -> BatchOutcome[T]:
    """Await every call with at most ``concurrency`` in flight; see the module docstring for errors."""
    run = _Run(calls, check_max_errors(max_errors))
    workers = [asyncio.create_task(run.worker()) for _ in range(min(concurrency, len(calls)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return run.outcome


class _Run(Generic[T]):
    def __init__(self, calls: Sequence[Callable[[], Awaitable[T]]], max_errors: int | None) -> None:
        self.calls = calls
        self.max_errors = max_errors
        self.pending = iter(range(len(calls)))  # shared: each worker takes the next index
        self.outcome: BatchOutcome[T] = BatchOutcome([None] * len(calls))

    async def worker(self) -> None:
        for index in self.pending:
            try:
                self.outcome.results[index] = await self.calls[index]()
            except Exception as exc:
                self.fail(index, exc)

    def fail(self, index: int, exc: Exception) -> None:
        if isinstance(exc, ConfigurationError) or (isinstance(exc, LMError) and exc.systemic):
            raise exc  # every other call would fail the same way
        logger.warning("call #%d failed: %s: %s", index, type(exc).__name__, exc)
        self.outcome.failed_indices.append(index)
        self.outcome.exceptions.append(exc)
        failures = len(self.outcome.failed_indices)
        if self.max_errors is not None and failures > self.max_errors:
            exc.add_note(f"stopped after {failures} failed calls (more than max_errors={self.max_errors})")
            raise exc
