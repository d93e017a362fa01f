"""What a worker's ``/healthz`` and ``/readyz`` answer (served beside ``/metrics``).

- **/healthz** (liveness): the process is alive and its event loop runs callbacks. The HTTP server
  answers from a thread of its own, so an answer alone proves little; the probe hands the loop a
  callback and waits for it (at most ``timeout_s``). A loop that does not run it in time is stuck
  (a blocking call, a busy loop) and the worker is better restarted.
- **/readyz** (readiness): the worker's own check, run on that same loop so that it reads the
  worker's state without locks. A consuming worker is ready while Kafka answers and its member is
  assigned partitions or steady in its group (a member with no partition, one replica more than
  there are partitions, is ready too: it takes over when another leaves); the aggregator once its
  tables are recovered and the group is not rebalancing.

Neither says anything about jobs, prompts or keys, so both are served without a token even where
``/metrics`` is protected: a kubelet's probe carries no credentials.

    >>> health = Health()
    >>> health.attach(asyncio.get_running_loop(), ready=lambda: None)  # doctest: +SKIP
    >>> health.live()  # doctest: +SKIP
    Verdict(ok=True, detail='event loop answered in 0.1 ms')
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from dspex.streams.outage import REACHABILITY

if TYPE_CHECKING:
    from dspex.streams.consumer import ConsumerRuntime

__all__ = ["DEFAULT_PROBE_TIMEOUT_S", "Health", "ReadinessCheck", "Verdict", "consumer_readiness"]

DEFAULT_PROBE_TIMEOUT_S = 5.0
"""How long a probe waits for the event loop: well above a busy loop's latency, below the
kubelet's timeout in the Helm chart (infra/helm/dspex)."""

ReadinessCheck = Callable[[], str | None]
"""Returns None when ready, else why not (one line, shown in the /readyz answer)."""

T = TypeVar("T")


class Verdict(NamedTuple):
    """One probe's answer: HTTP 200 when ``ok``, else 503; ``detail`` is the body."""

    ok: bool
    detail: str


class Health:
    """The liveness and readiness of one process (see the module docs)."""

    def __init__(self, *, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: ReadinessCheck | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, ready: ReadinessCheck | None = None) -> None:
        """Probe ``loop`` from now on; ``ready`` (run on the loop) decides /readyz."""
        self._loop, self._ready = loop, ready

    def live(self) -> Verdict:
        """Alive while the event loop runs a callback within ``timeout_s``."""
        loop = self._loop
        if loop is None or (not loop.is_running() and not loop.is_closed()):
            return Verdict(True, "alive; the event loop has not started yet")
        started = time.monotonic()
        answered = self._on_loop(loop, lambda: True)
        if isinstance(answered, str):
            return Verdict(False, answered)
        return Verdict(True, f"event loop answered in {(time.monotonic() - started) * 1000:.1f} ms")

    def ready(self) -> Verdict:
        """Ready when the attached check, run on the loop, names no reason not to be."""
        loop, check = self._loop, self._ready
        if loop is None or check is None:
            return Verdict(False, "starting: not consuming yet")
        if not loop.is_running():
            return Verdict(False, "the event loop is not running")
        reason = self._on_loop(loop, lambda: _Reason(check()))
        if isinstance(reason, str):
            return Verdict(False, reason)
        return Verdict(reason.text is None, reason.text or "ready")

    def _on_loop(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T | str:
        """``fn()`` run on ``loop``, or why it could not be (a str)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except Exception as exc:  # reported as the probe's answer, never raised into the loop
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # closed while we looked
            return "the event loop is closed"
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return f"the event loop did not answer within {self.timeout_s:g} s"
        except Exception as exc:
            return f"the check failed: {type(exc).__name__}: {exc}"


class _Reason(NamedTuple):
    # a check's answer wrapped, so that it is never taken for _on_loop's own failure text
    text: str | None


def consumer_readiness(runtime: ConsumerRuntime | None, group_id: str) -> str | None:
    """Why a consuming worker is not ready (None: it is); call it on the worker's loop."""
    if REACHABILITY.down:
        return "Kafka is unreachable"
    if runtime is None:
        return "starting: not consuming yet"
    if runtime.assignment() or runtime.in_group:
        return None
    return f"not yet a member of consumer group {group_id} (joining or rebalancing)"
