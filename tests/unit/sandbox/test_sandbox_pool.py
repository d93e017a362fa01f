"""SandboxPool's bookkeeping, against the fake runner: reuse, recycling, failures, closing."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspex.primitives.code_interpreter import CodeInterpreterError, create_interpreter
from dspex.sandbox.errors import SandboxStartupError, SandboxTimeoutError
from dspex.sandbox.pool import SandboxPool
from dspex.sandbox.process import SandboxLimits

FAKE = str(Path(__file__).with_name("fake_runner.py"))
FAST = SandboxLimits(timeout_s=1.0, start_timeout_s=5.0)


def make_pool(*args: str, **kwargs: Any) -> SandboxPool:
    return SandboxPool(deno_command=[sys.executable, FAKE, *args], limits=FAST, **kwargs)


@pytest.fixture
def pool() -> Iterator[SandboxPool]:
    with make_pool(size=1) as sandboxes:
        sandboxes.start()
        yield sandboxes


def pid_of(session: Any) -> int:
    return int(session._process.pid)


def test_the_pool_is_an_interpreter_factory(pool: SandboxPool) -> None:
    session = create_interpreter(pool)
    assert session.execute("echo:hi") == "hi"
    session.shutdown()
    assert pool.execution_instructions.startswith("Python runs in Pyodide")


def test_a_healthy_process_serves_the_next_session(pool: SandboxPool) -> None:
    with pool() as first:
        first.execute("echo:1")
        pid = pid_of(first)
    with pool() as second:
        second.execute("echo:2")
        assert pid_of(second) == pid
    assert pool.stats() | {"size": 1} == {
        "size": 1,
        "idle": 1,
        "active": 0,
        "warming": 0,
        "started": 1,
        "sessions": 2,
    }


def test_max_uses_one_gives_every_session_its_own_process() -> None:
    with make_pool(size=1, max_uses=1) as pool:
        with pool() as first:
            first.execute("echo:1")
            pid = pid_of(first)
        with pool() as second:
            second.execute("echo:2")
            assert pid_of(second) != pid
        assert pool.stats()["recycled"] == 2  # both, at the end of their sessions


def test_a_killed_process_is_replaced_and_counted_by_kind(pool: SandboxPool) -> None:
    with pool() as doomed:
        doomed.start()
        pid = pid_of(doomed)
        with pytest.raises(SandboxTimeoutError):
            doomed.execute("hang")
    with pool() as fresh:
        assert fresh.execute("echo:back") == "back"
        assert pid_of(fresh) != pid
    stats = pool.stats()
    assert stats["failures_timeout"] == 1 and stats["recycled"] == 1 and stats["started"] == 2


def test_a_dropped_session_gives_its_process_back(pool: SandboxPool) -> None:
    session = pool()
    session.execute("echo:x")
    assert pool.stats()["active"] == 1
    del session
    gc.collect()
    assert pool.stats()["active"] == 0 and pool.stats()["idle"] == 1


def test_a_broken_runtime_fails_the_session_instead_of_hanging() -> None:
    with make_pool("die-at-start", size=1) as pool:
        with pytest.raises(SandboxStartupError, match="Pyodide could not be loaded"):
            pool().execute("echo:x")
        assert pool.stats()["failures_startup"] >= 1


def test_a_closed_pool_refuses_new_sessions(pool: SandboxPool) -> None:
    pool.close()
    assert pool.stats()["idle"] == 0
    with pytest.raises(CodeInterpreterError, match="closed"):
        pool()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="size >= 1"):
        make_pool(size=0)
