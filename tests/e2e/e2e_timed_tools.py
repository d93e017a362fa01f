"""Two slow tools for the tool-timing pipeline test, importable by path in the test process and in
the workers (``--allow-module e2e_timed_tools``; their PYTHONPATH has this folder)."""

from __future__ import annotations

import asyncio
import time

__all__ = ["long_lookup", "short_lookup"]


async def short_lookup(query: str) -> str:
    """Look the query up in the fast index (0.2 s)."""
    await asyncio.sleep(0.2)  # a coroutine tool, on the worker's event loop
    return f"fast: {len(query)}"


def long_lookup(query: str) -> str:
    """Look the query up in the slow archive (0.4 s)."""
    time.sleep(0.4)  # a sync tool, in a worker thread
    return f"slow: {len(query)}"
