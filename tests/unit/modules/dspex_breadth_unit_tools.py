"""Tools, reward functions and programs for the module-breadth unit tests, importable by path."""

from __future__ import annotations

import threading
from typing import Any, Literal

from pydantic import BaseModel

from dspex.errors import LMServerError
from dspex.primitives import Module, Prediction

__all__ = [
    "Flaky",
    "Point",
    "async_lookup",
    "constant_reward",
    "describe_point",
    "search",
    "thread_of_sync_tool",
]

thread_of_sync_tool: list[int] = []


class Point(BaseModel):
    x: int
    y: int


def search(query: str, limit: int = 3, mode: Literal["fast", "exact"] = "fast") -> list[str]:
    """Search the notes.

    Returns up to `limit` matching lines."""
    thread_of_sync_tool.append(threading.get_ident())
    return [f"{mode}:{query}"] * limit


async def async_lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def describe_point(point: Point) -> str:
    """Describe a point."""
    return f"({point.x}, {point.y})"


def constant_reward(inputs: dict[str, Any], pred: Prediction) -> float:
    """Always 0.5."""
    return 0.5


class Flaky(Module):
    """Fails its first `failures` calls (counted across copies), then answers with the call number."""

    calls: list[int] = []  # shared on purpose: BestOfN runs copies of the module

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures

    async def aforward(self, question: str) -> Prediction:
        Flaky.calls.append(len(Flaky.calls))
        if len(Flaky.calls) <= self.failures:
            raise LMServerError("the server had a bad moment", status=500)
        return Prediction(answer=str(len(Flaky.calls)))
