"""A predictor's sandbox (``--sandbox-pool``) and the sandbox metrics, against the fake runner."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import dspex
from dspex.configuration import current_settings
from dspex.errors import CodeExecutionError, ConfigurationError
from dspex.modules.predict import Predict
from dspex.modules.program_of_thought import ProgramOfThought
from dspex.modules.rlm import RLM
from dspex.observability.callbacks import PrometheusCallback, sandbox_outcome
from dspex.observability.metrics import sandbox_pool_gauges
from dspex.primitives.code_interpreter import create_interpreter
from dspex.sandbox.errors import SandboxMemoryError, SandboxOutputError, SandboxTimeoutError
from dspex.sandbox.process import SandboxLimits
from dspex.sandbox.worker import (
    NO_SANDBOX_MESSAGE,
    SandboxDisabledError,
    WorkerSandbox,
    limits_from_env,
    needs_code,
    worker_sandbox,
)

FAKE = str(Path(__file__).with_name("fake_runner.py"))
FAST = SandboxLimits(timeout_s=1.0, start_timeout_s=5.0)


class _Wrapper(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.steps = [Predict("question -> answer"), RLM("question -> answer")]

    def forward(self, question: str) -> dspex.Prediction:
        return self.steps[1](question=question)


def executions(outcome: str) -> float:
    value = REGISTRY.get_sample_value("dspex_sandbox_executions_total", {"outcome": outcome})
    return value or 0.0


def test_code_running_modules_are_recognised_anywhere_in_a_program() -> None:
    assert needs_code(RLM("question -> answer"))
    with pytest.warns(DeprecationWarning):
        assert needs_code(ProgramOfThought("question -> answer"))
    assert needs_code(_Wrapper())
    assert not needs_code(Predict("question -> answer"))


def test_without_a_pool_code_is_refused_with_the_reason() -> None:
    with worker_sandbox(0) as sandbox:
        assert sandbox.pool is None
        with pytest.raises(SandboxDisabledError, match="--sandbox-pool 0"):
            create_interpreter()
        refused = sandbox.refusal("candidate-1", _Wrapper())
        assert isinstance(refused, SandboxDisabledError)
        assert str(refused) == NO_SANDBOX_MESSAGE
        assert sandbox.refusal("candidate-2", Predict("question -> answer")) is None
    assert current_settings().interpreter_factory is None  # the block's factory is gone after it


def test_with_a_pool_interpreters_come_from_it_and_it_is_closed_after() -> None:
    with worker_sandbox(1, deno_command=[sys.executable, FAKE], limits=FAST) as sandbox:
        assert sandbox.pool is not None
        assert sandbox.refusal("candidate-1", _Wrapper()) is None
        with create_interpreter() as session:
            assert session.execute("echo:hi") == "hi"
            process = session.deno_process
        assert sandbox.pool.stats()["sessions"] == 1
    assert process is not None
    assert process.wait(timeout=10) is not None  # no process outlives the worker's pool


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="--sandbox-pool"), worker_sandbox(-1):
        pass


@pytest.mark.parametrize(
    ("exception", "outcome"),
    [
        (None, "ok"),
        (CodeExecutionError("NameError: x"), "code_error"),
        (SyntaxError("bad"), "code_error"),
        (SandboxOutputError("too long"), "output"),
        (SandboxTimeoutError("slow"), "timeout"),
        (SandboxMemoryError("big"), "memory"),
        (RuntimeError("?"), "other"),
    ],
)
def test_execution_outcomes(exception: BaseException | None, outcome: str) -> None:
    assert sandbox_outcome(exception) == outcome


def test_executions_are_counted_through_the_callback_seam() -> None:
    before_ok, before_error = executions("ok"), executions("code_error")
    with (
        worker_sandbox(1, deno_command=[sys.executable, FAKE], limits=FAST),
        dspex.context(callbacks=[PrometheusCallback()]),
        create_interpreter() as session,
    ):
        session.execute("echo:1")
        with pytest.raises(CodeExecutionError):
            session.execute("error:ValueError")
    assert executions("ok") == before_ok + 1
    assert executions("code_error") == before_error + 1


def test_pool_gauges_read_the_pool_at_scrape_time() -> None:
    stats = {"size": 3, "active": 1, "idle": 2}
    sandbox_pool_gauges(lambda: stats)
    assert REGISTRY.get_sample_value("dspex_sandbox_pool_size") == 3
    stats["active"] = 2
    assert REGISTRY.get_sample_value("dspex_sandbox_busy") == 2
    assert REGISTRY.get_sample_value("dspex_sandbox_idle") == 2


def test_a_dropped_session_never_returns_a_process_another_session_holds() -> None:
    # the worker's pool under contention: a finished session's object outlives its shutdown
    with worker_sandbox(1, deno_command=[sys.executable, FAKE], limits=FAST) as sandbox:
        assert sandbox.pool is not None
        first = create_interpreter()
        first.execute("echo:1")
        first.shutdown()
        with create_interpreter() as second:
            second.execute("echo:2")
            del first
            gc.collect()
            assert sandbox.pool.stats()["active"] == 1  # still leased to the second session
            assert second.execute("echo:3") == "3"


def test_programs_running_code_wait_for_a_slot_on_the_loop_not_in_the_pool() -> None:
    running: list[int] = []
    most = 0

    async def task(sandbox: WorkerSandbox, program: dspex.Module, name: str) -> None:
        nonlocal most
        async with sandbox.slot(name, program):
            running.append(1)
            most = max(most, len(running))
            await asyncio.sleep(0.01)
            running.pop()

    async def main(sandbox: WorkerSandbox, program: dspex.Module) -> None:
        name = type(program).__name__  # the verdict is remembered per candidate id
        await asyncio.gather(*(task(sandbox, program, name) for _ in range(5)))

    with worker_sandbox(2, deno_command=[sys.executable, FAKE], limits=FAST) as sandbox:
        asyncio.run(main(sandbox, _Wrapper()))
        assert most == 2  # the pool's size
        most = 0
        asyncio.run(main(sandbox, Predict("question -> answer")))  # another candidate: runs no code
        assert most == 5


def test_sandbox_limits_come_from_the_environment_and_bad_ones_name_the_variable() -> None:
    limits = limits_from_env({"DSPEX_SANDBOX_TIMEOUT_S": "2.5", "DSPEX_SANDBOX_MEMORY_MB": "300"})
    assert (limits.timeout_s, limits.memory_mb) == (2.5, 300)
    assert limits.output_chars == SandboxLimits().output_chars  # unset: the default
    with pytest.raises(ConfigurationError, match=r"^DSPEX_SANDBOX_MEMORY_MB: .*'lots'"):
        limits_from_env({"DSPEX_SANDBOX_MEMORY_MB": "lots"})
    with pytest.raises(ConfigurationError, match="DSPEX_SANDBOX_TIMEOUT_S"):
        limits_from_env({"DSPEX_SANDBOX_TIMEOUT_S": "-1"})
