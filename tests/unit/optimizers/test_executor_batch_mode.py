"""KafkaExecutor(evaluation_mode="batch"): full evaluations go through the provider's Batch API."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.modules import Predict
from dspex.optimizers.executor import KafkaExecutor
from dspex.primitives import Example


class _Client:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def arun(self, *args: Any, **options: Any) -> list[Any]:
        self.calls.append(options)
        return []


@pytest.mark.parametrize(("mode", "sent"), [("online", None), ("batch", "batch")])
async def test_evaluations_carry_the_mode_asked_for(mode: Any, sent: str | None) -> None:
    client = _Client()
    executor = KafkaExecutor(client, evaluation_mode=mode)
    examples = [Example(question="1+1?", answer="2").with_inputs("question")]
    await executor.evaluate_many([Predict("question -> answer")], examples, "exact_match:answer")
    assert [call.get("mode") for call in client.calls] == [sent]
