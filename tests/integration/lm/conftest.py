"""Fixtures: the scripted LM server (see lm_scripted_server.py) in the test's loop or in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lm_scripted_server import ScriptedServer, start

from dspex.lm import LM, RetryPolicy


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer()
    runner = await start(scripted)
    yield scripted
    scripted.release.set()
    await runner.cleanup()


@pytest.fixture
def threaded_server() -> Iterator[ScriptedServer]:
    """The same server on its own loop in a thread, for sync tests (the client runs elsewhere)."""
    scripted = ScriptedServer()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="scripted-lm-server", daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(start(scripted), loop).result(timeout=10)
    yield scripted
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


FAST_RETRIES = RetryPolicy(base_delay=0.01, max_delay=0.05)


@pytest.fixture
def make_lm(server: ScriptedServer, tmp_path: Path) -> Any:
    def make(**kwargs: Any) -> LM:
        options: dict[str, Any] = {"api_base": server.base_url, "cache_dir": tmp_path / "cache"}
        options["retry_policy"] = FAST_RETRIES
        options.update(kwargs)
        return LM("sim/scripted", **options)

    return make
