"""``Parallel``: run many (module, example) pairs at once, at most ``num_threads`` in flight.

    parallel = Parallel(num_threads=32, max_errors=5)
    results = await parallel.acall([(qa, ex) for ex in devset])       # or parallel([...]) from sync code
    results, failed, errors = Parallel(return_failed_examples=True)(pairs)

DSPy's threads become asyncio tasks: a dspex module is awaited (``acall``), an ``async def`` callable
too, and a plain sync callable runs in a worker thread. ``num_threads`` bounds the calls in flight
(``concurrency=`` is dspex's name for it). Error semantics are :mod:`dspex._parallel`'s: failed pairs
give None, more than ``max_errors`` failures raise, a configuration or systemic LM error is raised at
once. Each pair's ``settings.usage_tracker`` is a copy of the caller's (DSPy's threads get one), so
it reports that pair's own usage; its LM calls are counted by the caller's trackers too.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from dspex._parallel import call_inputs, check_max_errors, own_usage_tracker, resolve_concurrency, run_bounded
from dspex._sync import run_in_thread, run_sync
from dspex.configuration import current_settings
from dspex.errors import InputError

__all__ = ["Parallel"]

Pair = tuple[Any, Any]


class Parallel:
    """Runs ``(module, example)`` pairs concurrently; results in pair order.

    DSPy's constructor: ``num_threads`` bounds how many pairs are in flight (default
    ``dspex.settings.num_threads``; ``concurrency=`` is dspex's name for it), ``max_errors`` is how many
    failures are tolerated (default ``dspex.settings.max_errors``). ``provide_traceback`` and
    ``disable_progress_bar`` are kept for DSPy's callers; ``timeout`` and ``straggler_limit`` too, but
    dspex does not resubmit slow calls (each LM call has its own timeout and retries).

    An example is a :class:`~dspex.Example` (called with its marked inputs; with
    ``access_examples=False`` passed whole as the one positional argument), a dict (keyword inputs),
    a tuple (positional arguments), or for a nested ``Parallel`` a list of pairs.
    """

    def __init__(
        self,
        num_threads: int | None = None,
        max_errors: int | None = None,
        access_examples: bool = True,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
        timeout: int = 120,
        straggler_limit: int = 3,
        *,
        concurrency: int | None = None,
    ) -> None:
        settings = current_settings()
        if concurrency is None and num_threads is None:
            num_threads = settings.num_threads
        self.num_threads = resolve_concurrency(concurrency, num_threads)
        self.max_errors = check_max_errors(settings.max_errors if max_errors is None else max_errors)
        self.access_examples = access_examples
        self.return_failed_examples = return_failed_examples
        self.provide_traceback = provide_traceback
        self.disable_progress_bar = disable_progress_bar
        self.timeout = timeout
        self.straggler_limit = straggler_limit

    @property
    def concurrency(self) -> int:
        """dspex's name for :attr:`num_threads`."""
        return self.num_threads

    def __call__(self, exec_pairs: Sequence[Pair], num_threads: int | None = None) -> Any:
        """Sync form of :meth:`acall` (works inside a running event loop too; see :mod:`dspex._sync`)."""
        return run_sync(self.acall(exec_pairs, num_threads))

    def forward(self, exec_pairs: Sequence[Pair], num_threads: int | None = None) -> Any:
        """DSPy's name for the sync call."""
        return self(exec_pairs, num_threads)

    async def acall(
        self, exec_pairs: Sequence[Pair], num_threads: int | None = None, *, concurrency: int | None = None
    ) -> Any:
        """Results in order; with ``return_failed_examples``: ``(results, failed_examples, exceptions)``."""
        calls = [self._call(pair, index) for index, pair in enumerate(exec_pairs)]
        given = concurrency if concurrency is not None else num_threads
        bound = self.num_threads if given is None else resolve_concurrency(given, None)
        outcome = await run_bounded(calls, concurrency=bound, max_errors=self.max_errors)
        return outcome.packaged([example for _, example in exec_pairs], self.return_failed_examples)

    def _call(self, pair: Pair, index: int) -> Callable[[], Awaitable[Any]]:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InputError(f"pair #{index} must be a (module, example) tuple, got {pair!r}")
        module, example = pair
        if isinstance(example, tuple) or (isinstance(example, list) and isinstance(module, Parallel)):
            args = example if isinstance(example, tuple) else (example,)
            return functools.partial(_invoke, module, args, {})
        if isinstance(example, Mapping) or (self.access_examples and hasattr(example, "input_keys")):
            return functools.partial(_invoke, module, (), call_inputs(example, index))
        if hasattr(example, "input_keys"):
            return functools.partial(_invoke, module, (example,), {})
        raise InputError(
            f"example #{index} is a {type(example).__name__}; use a dspex.Example, a dict or a tuple"
        )

    def __repr__(self) -> str:
        return f"Parallel(num_threads={self.num_threads}, max_errors={self.max_errors})"


async def _invoke(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    with own_usage_tracker():
        return await _invoke_target(target, args, kwargs)


async def _invoke_target(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    acall = getattr(target, "acall", None)
    if callable(acall):
        return await acall(*args, **kwargs)
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__):
        return await target(*args, **kwargs)
    if callable(target):
        return await run_in_thread(target, *args, **kwargs)
    raise InputError(f"{target!r} is not a module or a callable")
