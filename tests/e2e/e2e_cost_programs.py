"""A program of two LM calls per example that the cost-truth test ships to its predictors (started
with ``--allow-module e2e_cost_programs``): a run cancelled between its calls has made one answered
call that no prediction will ever carry."""

from __future__ import annotations

from typing import Any

import dspex

INSTRUCTIONS = "Answer the arithmetic question with a number."


class DraftThenCheck(dspex.Module):
    """Drafts an answer, then answers again with the draft in view: two LM calls in sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = dspex.Predict(dspex.make_signature("question -> answer", INSTRUCTIONS))
        self.check = dspex.Predict(dspex.make_signature("question, draft -> answer", INSTRUCTIONS))

    async def aforward(self, question: str) -> Any:
        draft = await self.draft.acall(question=question)
        return await self.check.acall(question=question, draft=draft.answer)

    def forward(self, question: str) -> Any:
        draft = self.draft(question=question)
        return self.check(question=question, draft=draft.answer)
