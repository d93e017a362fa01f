"""Real Deno + Pyodide sandboxes, booted once per session and shared: a boot costs seconds of CPU.

``shared`` is one interpreter with a granted read file, write file and environment variable; the
tests that kill their sandbox (time and memory limits) take sessions from ``pool`` instead, which
warms replacements in the background. Without Deno or the cached Pyodide these tests skip locally
and fail in CI (``CI=true``): ``make install`` provides both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.sandbox import install
from dspex.sandbox.errors import SandboxStartupError
from dspex.sandbox.pool import SandboxPool
from dspex.sandbox.process import SandboxLimits
from dspex.testing.listener import LoopbackListener

CANARY = "DSPEX_SANDBOX_CANARY"
UNGRANTED = "DSPEX_SANDBOX_UNGRANTED"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@dataclass
class Grants:
    folder: Path
    read_file: Path
    write_file: Path
    outside: Path = field(init=False)

    def __post_init__(self) -> None:
        self.outside = self.folder.parent / "outside.txt"


@pytest.fixture(scope="session")
def deno_ready() -> None:
    try:
        install.check_installed()
        install.find_deno()
    except SandboxStartupError as exc:
        if _in_ci():
            pytest.fail(f"the sandbox runtime is missing in CI: {exc}")
        pytest.skip(f"the sandbox runtime is missing: {exc}")


@pytest.fixture(scope="session")
def grants(tmp_path_factory: pytest.TempPathFactory) -> Grants:
    folder = tmp_path_factory.mktemp("sandbox") / "granted"
    folder.mkdir()
    (folder / "notes.txt").write_text("granted content")
    return Grants(folder, folder / "notes.txt", folder / "result.txt")


@pytest.fixture(scope="session")
def pool(deno_ready: None) -> Iterator[SandboxPool]:
    limits = SandboxLimits(timeout_s=3.0, memory_mb=512)
    with SandboxPool(size=2, limits=limits, max_uses=100) as sandboxes:
        sandboxes.start(wait=False)  # warms while `shared` boots
        yield sandboxes


@pytest.fixture(scope="session")
def shared(pool: SandboxPool, grants: Grants) -> Iterator[PythonInterpreter]:
    os.environ[CANARY] = "granted-value"
    os.environ[UNGRANTED] = "host only"
    try:
        interpreter = PythonInterpreter(
            enable_read_paths=[grants.read_file],
            enable_write_paths=[grants.write_file],
            enable_env_vars=[CANARY],
        )
        interpreter.start()
    finally:
        del os.environ[CANARY], os.environ[UNGRANTED]
    with interpreter:
        yield interpreter


@pytest.fixture
def listener() -> Iterator[LoopbackListener]:
    server = LoopbackListener()
    yield server
    server.close()
