"""Programs the sandbox end-to-end tests ship to their predictors (started with ``--allow-module``).

``RLM`` alone cannot be rebuilt from a saved program yet (its constructor needs the signature), so
the test's program wraps one in a class whose constructor takes no arguments.
"""

from __future__ import annotations

import warnings
from typing import Any

import dspex
from dspex.modules.code_act import CodeAct
from dspex.modules.rlm import RLM


class ArithmeticRLM(dspex.Module):
    """Answers an arithmetic question with code run in the sandbox (RLM, at most 3 steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.rlm = RLM("question -> answer", max_iters=3)

    async def aforward(self, question: str) -> Any:
        return await self.rlm.acall(question=question)

    def forward(self, question: str) -> Any:
        return self.rlm(question=question)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class ArithmeticCodeAct(dspex.Module):
    """Answers an arithmetic question with CodeAct: code run in the sandbox, then an extract step."""

    def __init__(self) -> None:
        super().__init__()
        with warnings.catch_warnings():  # DSPy's notice that RLM replaces CodeAct: expected here
            warnings.simplefilter("ignore", DeprecationWarning)
            self.act = CodeAct("question -> answer", tools=[add], max_iters=3)

    async def aforward(self, question: str) -> Any:
        return await self.act.acall(question=question)

    def forward(self, question: str) -> Any:
        return self.act(question=question)
