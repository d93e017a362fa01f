"""The sandbox in a predictor worker: one pool per process, or a clear refusal (``--sandbox-pool N``).

``dspex worker predict --sandbox-pool N`` (N > 0) starts one :class:`SandboxPool` of ``N`` warm
Deno + Pyodide processes for the worker process and installs it as the ``interpreter_factory`` of
every program the worker runs; the pool is closed when the worker stops, so no Deno process
outlives it. With 0 (the default) the worker runs no model-written code: a task whose program
needs an interpreter (``RLM``, ``ProgramOfThought``, ``CodeAct``, or any module asking the factory
for one) fails as an example with :data:`NO_SANDBOX_MESSAGE`, and the worker keeps serving.

    with worker_sandbox(2) as sandbox:                  # inside the worker's run()
        sandbox.refusal(candidate_id, program)          # None, or the error to record for a task
        async with sandbox.slot(candidate_id, program):  # then run it: interpreters from the pool
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any

from dspex import configuration
from dspex.errors import CodeInterpreterError
from dspex.primitives.module import Module
from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.sandbox.pool import SandboxPool
from dspex.sandbox.process import SandboxLimits
from dspex.streams.config import env_values

__all__ = [
    "LIMITS_ENV_PREFIX",
    "NO_SANDBOX_MESSAGE",
    "SandboxDisabledError",
    "WorkerSandbox",
    "limits_from_env",
    "needs_code",
    "worker_sandbox",
]

NO_SANDBOX_MESSAGE = "--sandbox-pool 0: this worker runs no code; start predictors with --sandbox-pool N"
LIMITS_ENV_PREFIX = "DSPEX_SANDBOX_"
# Candidates whose verdict (needs code or not) is remembered; past it the memo starts over.
_MEMO_LIMIT = 1024


class SandboxDisabledError(CodeInterpreterError):
    """The worker was started without a sandbox pool and the program needs to run code.

    Not systemic on purpose: the task fails as an example, the job and the worker go on.
    """

    def __init__(self, message: str = NO_SANDBOX_MESSAGE) -> None:
        super().__init__(message)


class _NoSandbox:
    """The ``interpreter_factory`` of a worker without a pool: every request is refused."""

    # the prompt a code-running module builds describes the sandbox either way
    execution_instructions = PythonInterpreter.execution_instructions

    def __call__(self) -> Any:
        raise SandboxDisabledError()

    def __repr__(self) -> str:
        return "NoSandbox()"


def _code_module_types() -> tuple[type[Module], ...]:
    # imported here: dspex.modules imports the primitives this package builds on
    from dspex.modules.code_act import CodeAct
    from dspex.modules.program_of_thought import ProgramOfThought
    from dspex.modules.rlm import RLM

    return (RLM, ProgramOfThought, CodeAct)


def needs_code(program: Module) -> bool:
    """Whether ``program`` or one of its sub-modules runs model-written code (RLM, PoT, CodeAct)."""
    kinds = _code_module_types()
    return any(isinstance(module, kinds) for _, module in program.named_sub_modules())  # self included


class WorkerSandbox:
    """What a worker runs code with: ``pool`` (None with ``--sandbox-pool 0``) and its refusals."""

    def __init__(self, pool: SandboxPool | None) -> None:
        self.pool = pool
        self.factory: Any = pool if pool is not None else _NoSandbox()
        self._slots = asyncio.Semaphore(pool.size if pool is not None else 1)
        self._verdicts: dict[str, bool] = {}

    def refusal(self, candidate_id: str, program: Module) -> SandboxDisabledError | None:
        """The error a task of ``program`` fails with on this worker, or None when it may run."""
        if self.pool is not None or not self._needs_code(candidate_id, program):
            return None
        return SandboxDisabledError()

    def slot(self, candidate_id: str, program: Module) -> AbstractAsyncContextManager[Any]:
        """Hold it while a task's program runs: one of the pool's ``size`` for a program running code.

        DESIGN: a session keeps its process for the whole program run, so no more than ``size``
        such programs make progress at once. The others wait here, on the event loop, and not in
        the pool on a thread each: with hundreds of tasks in flight those waiting threads would
        take the shared thread pool the running sessions need to execute and finish.
        """
        if self.pool is None or not self._needs_code(candidate_id, program):
            return contextlib.nullcontext()
        return self._slots

    def _needs_code(self, candidate_id: str, program: Module) -> bool:
        verdict = self._verdicts.get(candidate_id)
        if verdict is None:
            if len(self._verdicts) >= _MEMO_LIMIT:
                self._verdicts.clear()
            verdict = self._verdicts[candidate_id] = needs_code(program)
        return verdict


def limits_from_env(env: Mapping[str, str]) -> SandboxLimits:
    """The sandbox limits ``DSPEX_SANDBOX_*`` variables in ``env`` set, defaults for the others."""
    return SandboxLimits(**env_values(SandboxLimits, LIMITS_ENV_PREFIX, env))


@contextmanager
def worker_sandbox(size: int, **interpreter_kwargs: Any) -> Iterator[WorkerSandbox]:
    """Install the worker's interpreter factory for the block: a pool of ``size``, or the refusal.

    The pool warms in the background (the worker starts consuming at once) and is closed on exit,
    idle processes at once and busy ones as their sessions end. Its per-execution limits come from
    ``DSPEX_SANDBOX_TIMEOUT_S``, ``_MEMORY_MB``, ``_OUTPUT_CHARS`` and ``_START_TIMEOUT_S`` where set
    (:class:`SandboxLimits`' defaults otherwise; a bad value is a one-line ConfigurationError).
    """
    if size < 0:
        raise ValueError(f"--sandbox-pool must be >= 0, got {size}")
    if size and "limits" not in interpreter_kwargs:
        interpreter_kwargs["limits"] = limits_from_env(os.environ)
    pool = SandboxPool(size=size, **interpreter_kwargs) if size else None
    sandbox = WorkerSandbox(pool)
    try:
        if pool is not None:
            pool.start(wait=False)
        with configuration.context(interpreter_factory=sandbox.factory):
            yield sandbox
    finally:
        if pool is not None:
            pool.close()
