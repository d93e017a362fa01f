"""DSPy's ``dspy.utils.parallelizer.ParallelExecutor``: a function over a list, in threads.

    executor = ParallelExecutor(num_threads=8, max_errors=3)
    results = executor.execute(fn, items)        # in order; None where fn raised
    executor.failed_indices, executor.exceptions_map

Each call runs in a copy of the caller's context, so dspex settings (``context`` blocks), callback
ancestry and open usage trackers reach it, and what a call changes there stays in it; as in DSPy, its
``settings.usage_tracker`` is a copy of the caller's, so it reports that call's own usage. With
``num_threads=1`` the calls run one after another on the calling thread. When ``max_errors`` calls
have failed, the calls not started are skipped and ``execute`` raises. dspex's own programs use
:class:`dspex.Parallel` (asyncio); this class is for DSPy code that calls the executor directly.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dspex._parallel import own_usage_tracker
from dspex.errors import DspexError

__all__ = ["ParallelExecutor"]

logger = logging.getLogger(__name__)

CANCELLED = "Execution cancelled due to errors or interruption."


class ParallelExecutor:
    """Run a function over items in threads, DSPy's way (see the module docs).

    ``timeout`` and ``straggler_limit`` are accepted for DSPy's signature; slow calls are not
    resubmitted (see docs/compat.md, ``Parallel``). ``compare_results`` and ``disable_progress_bar``
    are accepted too; no progress bar is drawn.
    """

    def __init__(
        self,
        num_threads: int | None = None,
        max_errors: int | None = None,
        disable_progress_bar: bool = False,
        provide_traceback: bool | None = None,
        compare_results: bool = False,
        timeout: int = 120,
        straggler_limit: int = 3,
    ) -> None:
        """Defaults come from ``dspex.settings`` (``num_threads``, ``max_errors``, ``provide_traceback``)."""
        from dspex.configuration import current_settings

        settings = current_settings()
        self.num_threads = num_threads or settings.num_threads
        self.max_errors = settings.max_errors if max_errors is None else max_errors
        self.disable_progress_bar = disable_progress_bar
        self.provide_traceback = (
            settings.provide_traceback if provide_traceback is None else provide_traceback
        )
        self.compare_results = compare_results
        self.timeout = timeout
        self.straggler_limit = straggler_limit
        self.error_count = 0
        self.error_lock = threading.Lock()
        self.cancel_jobs = threading.Event()
        self.failed_indices: list[int] = []
        self.exceptions_map: dict[int, Exception] = {}

    def execute(self, function: Callable[[Any], Any], data: Sequence[Any]) -> list[Any]:
        """``function(item)`` for every item, in order; None for a call that raised."""
        results: list[Any] = [None] * len(data)
        if self.num_threads == 1:
            for index, item in enumerate(data):
                if self.cancel_jobs.is_set():
                    break
                results[index] = self._one(function, index, item, contextvars.copy_context())
        else:
            with ThreadPoolExecutor(max_workers=self.num_threads) as pool:
                futures = [
                    pool.submit(self._one, function, index, item, contextvars.copy_context())
                    for index, item in enumerate(data)
                ]
                for index, future in enumerate(futures):
                    results[index] = future.result()
        if self.cancel_jobs.is_set():
            logger.warning(CANCELLED)
            raise DspexError(CANCELLED)
        return results

    def _one(
        self, function: Callable[[Any], Any], index: int, item: Any, context: contextvars.Context
    ) -> Any:
        if self.cancel_jobs.is_set():
            return None
        try:
            return context.run(_call_with_own_tracker, function, item)
        except Exception as exc:
            self._failed(index, item, exc)
            return None

    def _failed(self, index: int, item: Any, exc: Exception) -> None:
        with self.error_lock:
            self.error_count += 1
            self.failed_indices.append(index)
            self.exceptions_map[index] = exc
            if self.max_errors is not None and self.error_count >= self.max_errors:
                self.cancel_jobs.set()
        if self.provide_traceback:
            logger.error("Error for %r: %s\n%s", item, exc, traceback.format_exc())
        else:
            logger.error("Error for %r: %s. Set `provide_traceback=True` for traceback.", item, exc)


def _call_with_own_tracker(function: Callable[[Any], Any], item: Any) -> Any:
    with own_usage_tracker():
        return function(item)
