"""A scripted task: the task LM answers right only when its instruction names the magic word, and
only the metric's feedback says what the word is, so reflection on feedback is what finds it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.lm.base import BaseLM
from dspex.lm.client import LMResponse
from dspex.lm.usage import Usage, record_usage
from dspex.primitives import Example, Prediction

MAGIC = "PLEASE"


class ScriptedLM(BaseLM):
    """Both roles in one: a task LM for ``question -> answer`` and a reflection LM (see the module)."""

    def __init__(self, *, cost_usd: float = 0.0, reflect_with_feedback: bool = True) -> None:
        super().__init__("scripted", "chat", 0.0, 1000, False)
        self.cost_usd = cost_usd
        self.reflect_with_feedback = reflect_with_feedback
        self.calls = 0
        self.prompts: list[str] = []

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], *, rollout_id: int | None = None, **overrides: Any
    ) -> LMResponse:
        self.calls += 1
        usage = Usage(lm_calls=1, cost_usd=self.cost_usd)
        record_usage(usage)
        text = self._reply([str(m.get("content", "")) for m in messages])
        return LMResponse(text=text, model="scripted", usage=usage, finish_reason="stop")

    def _reply(self, contents: list[str]) -> str:
        last = contents[-1]
        if "new_instruction" in contents[0]:  # the default proposer: a Predict through JSONAdapter
            self.prompts.append(last)
            return json.dumps({"new_instruction": self._reflect(last)})
        if "write a new instruction" in last:  # gepa's raw reflection prompt (prompt_template)
            self.prompts.append(last)
            return f"```\n{self._reflect(last)}\n```"
        match = re.search(r"What is (\d+) \+ 1\?", last)
        right = match is not None and MAGIC in contents[0]
        answer = str(int(match.group(1)) + 1) if right and match else "0"
        return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"

    def _reflect(self, prompt: str) -> str:
        """The new instruction's text (the caller wraps it in the request's answer format)."""
        hint = re.search(r"the magic word is (\w+)", prompt)
        if self.reflect_with_feedback and hint:
            return f"Answer with the number only, and say {hint.group(1)}."
        return "Answer with the number only."


def dataset(n: int, offset: int = 0) -> list[Example]:
    return [
        Example(question=f"What is {i} + 1?", answer=str(i + 1)).with_inputs("question")
        for i in range(offset, offset + n)
    ]


def feedback_metric(
    gold: Example, pred: Prediction, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> Prediction:
    right = str(pred.get("answer")) == gold.answer
    feedback = "correct" if right else f"wrong: expected {gold.answer}; the magic word is {MAGIC}"
    return Prediction(score=float(right), feedback=feedback)


def score_only_metric(
    gold: Example, pred: Prediction, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> float:
    return float(str(pred.get("answer")) == gold.answer)
