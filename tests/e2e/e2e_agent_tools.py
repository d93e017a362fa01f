"""Tools of the ReActV2 programs the pipeline tests send to predictors, importable by path
(``e2e_agent_tools:lookup``) in the test process and in the workers (their PYTHONPATH has this folder).

``lookup`` calls a real HTTP service of the test: its address is read at call time from
``DSPEX_E2E_LOOKUP_URL`` (the test sets it in its own process and in the workers'), and when
``DSPEX_E2E_LOOKUP_LOG`` names a file every attempt appends ``"<unix time> <pid>"`` to it first, so
a test can count the attempts a stopped service did not see (connection refused).
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
import urllib.request

from dspex.modules import tool_policy

__all__ = ["LOOKUP_POLICY", "add", "lookup", "multiply"]

# The lookup service's breaker: three failed attempts open it, and it stays open 2 s between probes
# (no doubling: max_open_s == open_s), so a test can bound the probes of an outage by its length.
LOOKUP_POLICY = {
    "service": "lookup-api",
    "timeout_s": 3.0,
    "failure_threshold": 3,
    "open_s": 2.0,
    "max_open_s": 2.0,
}


def add(a: int, b: int) -> int:
    """Add two integers and return the sum."""
    return a + b


async def multiply(a: int, b: int) -> int:
    """Multiply two integers and return the product."""
    await asyncio.sleep(0.01)  # a coroutine tool, awaited on the worker's event loop
    return a * b


@tool_policy(**LOOKUP_POLICY)
def lookup(query: str) -> str:
    """Look a query up in the lookup service."""
    log = os.environ.get("DSPEX_E2E_LOOKUP_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:  # one short append: atomic across processes
            handle.write(f"{time.time():.3f} {os.getpid()}\n")
    url = os.environ["DSPEX_E2E_LOOKUP_URL"] + "?" + urllib.parse.urlencode({"q": query})
    with urllib.request.urlopen(url, timeout=2.0) as response:
        return str(response.read().decode("utf-8"))
