"""``Unbatchify``: call a batch function one item at a time from many threads (DSPy's
``dspy.utils.unbatchify``).

Callers on any thread pass single items; a background thread gathers them into batches of at most
``max_batch_size``, waiting at most ``max_wait_time`` seconds after a batch's first item for more,
and hands each caller its own output. The wait starts when the first item arrives (not when the
thread last looked), so a lone item is answered within ``max_wait_time`` and never sooner than the
batch is full or the wait is over.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from dspex.errors import DspexError

# How often an idle worker thread looks whether it was closed.
_IDLE_CHECK_S = 0.05


class Unbatchify:
    """Turn ``batch_fn(list) -> list`` into a thread-safe ``fn(item) -> output``."""

    def __init__(
        self,
        batch_fn: Callable[[list[Any]], list[Any]],
        max_batch_size: int = 32,
        max_wait_time: float = 0.1,
    ) -> None:
        if max_batch_size < 1:
            raise DspexError(f"Unbatchify: max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_time < 0:
            raise DspexError(f"Unbatchify: max_wait_time must be >= 0 seconds, got {max_wait_time}")
        self.batch_fn = batch_fn
        self.max_batch_size = max_batch_size
        self.max_wait_time = max_wait_time
        # (item, future) pairs, DSPy's attribute name: code that queues its own futures uses it.
        self.input_queue: queue.Queue[tuple[Any, Future[Any]]] = queue.Queue()
        self.stop_event = threading.Event()
        self.worker_thread = threading.Thread(target=self._serve, name="dspex-unbatchify", daemon=True)
        self.worker_thread.start()

    def __call__(self, input_item: Any) -> Any:
        """Queue one item and wait for its output (raises what the batch function raised)."""
        if self.stop_event.is_set():
            raise DspexError("Unbatchify is closed: create a new one to process more items")
        future: Future[Any] = Future()
        self.input_queue.put((input_item, future))
        return future.result()

    def close(self) -> None:
        """Stop the worker thread; items still queued fail with an error saying it was closed."""
        if self.stop_event.is_set():
            return
        self.stop_event.set()
        if threading.current_thread() is not self.worker_thread:
            self.worker_thread.join()

    def __enter__(self) -> Unbatchify:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A half-built instance (its __init__ raised) has no stop_event to set.
        if hasattr(self, "stop_event"):
            self.close()

    def _serve(self) -> None:
        while not self.stop_event.is_set():
            batch = self._next_batch()
            if batch:
                self._run(batch)
        self._fail_queued()

    def _next_batch(self) -> list[tuple[Any, Future[Any]]]:
        try:
            first = self.input_queue.get(timeout=_IDLE_CHECK_S)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.max_wait_time
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self.input_queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _run(self, batch: list[tuple[Any, Future[Any]]]) -> None:
        items = [item for item, _ in batch]
        futures = [future for _, future in batch]
        try:
            outputs = list(self.batch_fn(items))
        except Exception as exc:  # every caller of the batch gets what the batch function raised
            for future in futures:
                future.set_exception(exc)
            return
        if len(outputs) != len(items):
            error = DspexError(
                f"Unbatchify: batch_fn returned {len(outputs)} outputs for {len(items)} inputs; "
                "it must return one output per input, in order"
            )
            for future in futures:
                future.set_exception(error)
            return
        for future, output in zip(futures, outputs, strict=True):
            future.set_result(output)

    def _fail_queued(self) -> None:
        while True:
            try:
                _, future = self.input_queue.get_nowait()
            except queue.Empty:
                return
            future.set_exception(DspexError("Unbatchify is closed: this item was not processed"))
