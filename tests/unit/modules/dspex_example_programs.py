"""Example user programs for the module tests, importable by path (``dspex_example_programs:TwoStep``).

pytest puts this directory on ``sys.path`` (rootdir-relative "prepend" imports, no ``__init__.py``),
so saved programs naming these classes load the way a user's own package would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import dspex
from dspex.adapters import Adapter, AdapterResult
from dspex.lm import LM, LMResponse, Usage
from dspex.primitives import Module, Prediction
from dspex.signatures import Signature

__all__ = ["AsyncTwoStep", "Fanout", "NeedsArgs", "ScriptedAdapter", "SyncTwoStep", "offline_lm"]


def offline_lm(model: str = "openai/offline", **kwargs: Any) -> LM:
    """An LM that is never called (the scripted adapter answers): nothing listens at its address."""
    return LM(model, api_base="http://127.0.0.1:9/v1", cache=False, **kwargs)


class ScriptedAdapter(Adapter):
    """Answers without an LM: each output is ``"<field>(<input values>)"``. Records every call."""

    name: ClassVar[str] = "scripted"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def acall_result(
        self,
        lm: LM,
        signature: type[Signature],
        demos: Sequence[Mapping[str, Any]],
        inputs: Mapping[str, Any],
        *,
        config: Mapping[str, Any],
    ) -> AdapterResult:
        self.calls.append({"lm": lm, "demos": list(demos), "inputs": dict(inputs), "config": dict(config)})
        joined = ",".join(str(value) for value in inputs.values())
        outputs = {name: f"{name}({joined})" for name in signature.output_fields}
        response = LMResponse(text="", model=lm.model, usage=Usage())
        return AdapterResult(outputs=outputs, response=response, adapter=self.name)


class AsyncTwoStep(Module):
    """Draft with reasoning, then check the draft."""

    def __init__(self) -> None:
        self.draft = dspex.ChainOfThought("question -> answer")
        self.check = dspex.Predict("question, draft -> answer")

    async def aforward(self, question: str) -> Prediction:
        draft = await self.draft.acall(question=question)
        return await self.check.acall(question=question, draft=draft.answer)


class SyncTwoStep(Module):
    """The same two steps written as a sync ``forward`` calling sub-modules synchronously."""

    def __init__(self) -> None:
        self.draft = dspex.ChainOfThought("question -> answer")
        self.check = dspex.Predict("question, draft -> answer")

    def forward(self, question: str) -> Prediction:
        draft = self.draft(question=question)
        return self.check(question=question, draft=draft.answer)


class Fanout(Module):
    """Sub-modules in a list, a dict, and nested in another custom module."""

    def __init__(self) -> None:
        self.steps = [dspex.Predict("question -> answer"), dspex.ChainOfThought("question -> answer")]
        self.by_name = {"summary": dspex.Predict("text -> summary")}
        self.inner = AsyncTwoStep()

    async def aforward(self, question: str) -> Prediction:
        first = await self.steps[0].acall(question=question)
        await self.by_name["summary"].acall(text=first.answer)
        return await self.inner.acall(question=question)


class NeedsArgs(Module):
    """A program whose constructor takes an argument without a default."""

    def __init__(self, n_steps: int) -> None:
        self.steps = [dspex.Predict("question -> answer") for _ in range(n_steps)]

    async def aforward(self, question: str) -> Prediction:
        answer = question
        for step in self.steps:
            answer = (await step.acall(question=answer)).answer
        return Prediction(answer=answer)
