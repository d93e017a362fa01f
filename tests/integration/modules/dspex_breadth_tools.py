"""Tools and reward functions for the module-breadth HTTP tests, importable by path
(``dspex_breadth_tools:add``), as saved programs name them."""

from __future__ import annotations

import asyncio
from typing import Any

from dspex.primitives import Prediction
from dspex.testing.task import parse_question

__all__ = ["add", "answer_is_correct", "broken_add", "multiply", "never_good_enough", "tool_calls_seen"]

tool_calls_seen: list[tuple[str, int, int]] = []  # what the tools were really called with


def add(a: int, b: int) -> int:
    """Add two integers and return the sum."""
    tool_calls_seen.append(("add", a, b))
    return a + b


async def multiply(a: int, b: int) -> int:
    """Multiply two integers and return the product."""
    await asyncio.sleep(0)  # a real coroutine: ReAct must await it
    tool_calls_seen.append(("multiply", a, b))
    return a * b


def broken_add(a: int, b: int) -> int:
    """Add two integers and return the sum."""
    raise RuntimeError("the adding service is offline")


broken_add.__name__ = "add"  # offered to the LM as `add`; saved by its import path, broken_add


def answer_is_correct(inputs: dict[str, Any], pred: Prediction) -> float:
    """1.0 when the prediction's answer is the arithmetic question's answer."""
    question = parse_question(inputs["question"])
    try:
        return float(question is not None and int(str(pred.answer).strip()) == question.answer)
    except ValueError:
        return 0.0


def never_good_enough(inputs: dict[str, Any], pred: Prediction) -> float:
    """Always 0.0: every attempt runs (and Refine asks for advice between them)."""
    return 0.0
