"""``SandboxPool``: warm sandbox processes for one worker process, handed out as interpreters.

Starting Deno + Pyodide costs seconds of CPU; a pool starts ``size`` processes ahead of time and
keeps that many alive. Calling the pool returns a new :class:`PythonInterpreter` (so the pool is
an ``interpreter_factory``); its session takes a warm process at its first ``start``/``execute``
(waiting while all ``size`` are busy: the pool is also the worker's bound on sandbox memory) and
gives it back at ``shutdown``. A process that crashed or hit a limit is discarded and a new one
warmed in the background; a healthy one is reset (fresh namespace, no tools, files removed) and
reused up to ``max_uses`` sessions (``max_uses=1``: every session gets a process of its own).

Example::

    pool = SandboxPool(size=4)
    dspex.configure(interpreter_factory=pool)
    ...
    pool.close()
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter, deque
from typing import Any

from dspex.primitives.code_interpreter import CodeInterpreterError
from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.sandbox.errors import SandboxError, SandboxStartupError
from dspex.sandbox.process import SandboxProcess

__all__ = ["SandboxPool"]

logger = logging.getLogger(__name__)


class _PooledInterpreter(PythonInterpreter):
    """A session whose process comes from, and goes back to, a pool."""

    def __init__(self, pool: SandboxPool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool = pool

    def _spawn(self) -> SandboxProcess:
        process = self._pool._acquire()
        # a session dropped without shutdown() still returns its process
        self._lease_finalizer = weakref.finalize(self, self._pool._release, process)
        return process

    def _release(self, process: SandboxProcess) -> None:
        # Detached first: once given back, the process may serve another session, and this
        # session's finalizer must not hand it back a second time from under that one.
        finalizer = getattr(self, "_lease_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        self._pool._release(process)


class SandboxPool:
    """``size`` warm sandboxes; ``pool()`` is a new interpreter session backed by one of them.

    ``interpreter_kwargs`` are :class:`PythonInterpreter`'s arguments (``limits``, granted paths,
    ``tools``, ...), applied to every session. ``acquire_timeout_s`` bounds the wait for a free
    process. :meth:`stats` reports the pool's size, use and failures by kind.
    """

    execution_instructions = PythonInterpreter.execution_instructions

    def __init__(
        self,
        size: int = 2,
        *,
        max_uses: int = 50,
        acquire_timeout_s: float = 600.0,
        **interpreter_kwargs: Any,
    ) -> None:
        if size < 1 or max_uses < 1:
            raise ValueError("SandboxPool needs size >= 1 and max_uses >= 1")
        self.size, self.max_uses, self.acquire_timeout_s = size, max_uses, acquire_timeout_s
        self._kwargs = interpreter_kwargs
        self._template = PythonInterpreter(**interpreter_kwargs)  # checks the arguments once, never runs
        self._idle: deque[SandboxProcess] = deque()
        self._booting: set[SandboxProcess] = set()
        self._active = 0
        self._warming = 0
        self._boot_errors: deque[SandboxStartupError] = deque()
        self._closed = False
        self._cond = threading.Condition()
        self._counts: Counter[str] = Counter()

    def __call__(self) -> PythonInterpreter:
        """A new interpreter session (its process is taken from the pool when it starts)."""
        if self._closed:
            raise CodeInterpreterError("the sandbox pool is closed")
        return _PooledInterpreter(self, **self._kwargs)

    def start(self, wait: bool = True) -> None:
        """Warm the pool up to ``size`` processes; with ``wait``, until they are all ready."""
        with self._cond:
            self._fill()
            while wait and self._warming:
                self._cond.wait()
            if wait and self._boot_errors:
                raise self._boot_errors.popleft()

    def stats(self) -> dict[str, int]:
        """Pool size and state, sessions served, processes started and recycled, failures by kind."""
        with self._cond:
            return {
                "size": self.size, "idle": len(self._idle), "active": self._active,
                "warming": self._warming, **self._counts,
            }  # fmt: skip

    def close(self) -> None:
        """Stop the idle processes now and the busy ones when their sessions end."""
        with self._cond:
            self._closed = True
            idle, self._idle = list(self._idle), deque()
            booting = list(self._booting)
            self._cond.notify_all()
        for process in booting:
            process.close(grace_s=0)
        for process in idle:
            process.close()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- internals (called by the sessions) -------------------------------------------------------

    def _acquire(self) -> SandboxProcess:
        deadline = time.monotonic() + self.acquire_timeout_s
        with self._cond:
            while True:
                if self._closed:
                    raise CodeInterpreterError("the sandbox pool is closed")
                if self._idle:
                    return self._lease(self._idle.popleft())
                if self._boot_errors:
                    raise self._boot_errors.popleft()
                self._fill()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SandboxStartupError(f"no sandbox became free within {self.acquire_timeout_s:g} s")
                self._cond.wait(remaining)

    def _lease(self, process: SandboxProcess) -> SandboxProcess:
        self._active += 1
        process.leased = True
        process.uses += 1
        self._counts["sessions"] += 1
        return process

    def _release(self, process: SandboxProcess) -> None:
        with self._cond:
            if not process.leased:
                return  # shutdown() and the finalizer both report the same process
            process.leased = False
        healthy = (
            process.alive() and not self._closed and process.uses < self.max_uses and self._reset(process)
        )
        with self._cond:
            # counted busy until reset: else _fill() would start a process beyond ``size`` meanwhile
            self._active -= 1
            if healthy:
                self._idle.append(process)
            else:
                self._retire(process)
            self._cond.notify_all()

    def _reset(self, process: SandboxProcess) -> bool:
        try:
            return "result" in process.request("reset", {})
        except SandboxError:
            return False

    def _retire(self, process: SandboxProcess) -> None:
        if process.dead is not None:
            self._counts[f"failures_{process.dead.kind}"] += 1
        self._counts["recycled"] += 1
        threading.Thread(target=process.close, daemon=True).start()
        self._fill()

    def _fill(self) -> None:
        """Start warming processes until idle + busy + warming reaches ``size`` (lock held)."""
        while not self._closed and len(self._idle) + self._active + self._warming < self.size:
            self._warming += 1
            threading.Thread(target=self._warm_one, daemon=True, name="sandbox-pool-warm").start()

    def _warm_one(self) -> None:
        try:
            process = self._template._launch()
            with self._cond:
                self._booting.add(process)
            self._template._boot(process)
        except Exception as exc:  # a failed boot must reach a waiting session, never strand it
            self._boot_failed(exc)
            return
        with self._cond:
            self._booting.discard(process)
            self._warming -= 1
            self._counts["started"] += 1
            if self._closed:
                threading.Thread(target=process.close, daemon=True).start()
            else:
                self._idle.append(process)
            self._cond.notify_all()

    def _boot_failed(self, exc: Exception) -> None:
        error = exc if isinstance(exc, SandboxStartupError) else SandboxStartupError(f"start failed: {exc}")
        with self._cond:
            self._booting = {process for process in self._booting if process.alive()}
            self._warming -= 1
            if not self._closed:  # a boot cut short by close() is no failure
                logger.warning("sandbox pool: a process failed to start: %s", error)
                self._counts["failures_startup"] += 1
                self._boot_errors.append(error)
            self._cond.notify_all()
