"""Tools of the ReAct program the pipeline test sends to predictors, importable by path
(``e2e_react_tools:add``) in the test process and in the workers (their PYTHONPATH has this folder)."""

from __future__ import annotations

import asyncio

__all__ = ["add", "multiply"]


def add(a: int, b: int) -> int:
    """Add two integers and return the sum."""
    return a + b


async def multiply(a: int, b: int) -> int:
    """Multiply two integers and return the product."""
    await asyncio.sleep(0)  # a coroutine tool, awaited on the worker's event loop
    return a * b
