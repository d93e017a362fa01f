"""A user program for the HTTP module tests, importable by path (``dspex_http_programs:DraftAndCheck``)."""

from __future__ import annotations

import dspex
from dspex.primitives import Module, Prediction

__all__ = ["DraftAndCheck", "SyncDraftAndCheck"]


class _TwoSteps(Module):
    def __init__(self) -> None:
        self.draft = dspex.ChainOfThought("question -> answer")
        self.check = dspex.Predict("question, draft -> answer")


class DraftAndCheck(_TwoSteps):
    """Solve with reasoning, then answer again given the draft."""

    async def aforward(self, question: str) -> Prediction:
        draft = await self.draft.acall(question=question)
        return await self.check.acall(question=question, draft=draft.answer)


class SyncDraftAndCheck(_TwoSteps):
    """The same program with a sync ``forward`` (its sub-calls go back to the caller's loop)."""

    def forward(self, question: str) -> Prediction:
        draft = self.draft(question=question)
        return self.check(question=question, draft=draft.answer)
