"""A predictor's ``n`` samples as the callbacks hear them: one prompt formatted once, one LM call
(with ``n`` in its inputs and every sample's text as its outputs), each sample parsed, as DSPy's
single request with ``n``, while dspex still sends one request per sample."""

from __future__ import annotations

from typing import Any

from dspex.adapters import ChatAdapter
from dspex.adapters.types import AdapterResult
from dspex.configuration import context
from dspex.modules import Predict
from dspex.utils.callback import BaseCallback
from dspex.utils.dummies import DummyLM


class Heard(BaseCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("format", None))

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("lm+", inputs.get("n")))

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self.events.append(("lm-", len(outputs) if outputs is not None else exception))

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("parse", None))


def answers(*texts: str) -> DummyLM:
    return DummyLM([{"answer": text} for text in texts])


def test_n_samples_are_one_formatted_prompt_and_one_lm_call() -> None:
    heard, lm = Heard(), answers("a", "b", "c")
    with context(lm=lm, callbacks=[heard]):
        result = Predict("question -> answer", n=3)(question="q")
    assert [completion.answer for completion in result.completions] == ["a", "b", "c"]
    assert heard.events == [
        ("format", None),
        ("lm+", 3),
        ("lm-", 3),
        ("parse", None),
        ("parse", None),
        ("parse", None),
    ]
    assert len(lm.history) == 3  # still one request per sample


def test_an_adapter_that_changes_only_its_single_call_gets_one_call_per_sample() -> None:
    seen: list[int] = []

    class Counting(ChatAdapter):
        async def acall_result(
            self, lm: Any, signature: Any, demos: Any, inputs: Any, *, config: Any = None
        ) -> AdapterResult:
            seen.append(config["rollout_id"])
            return await super().acall_result(lm, signature, demos, inputs, config=config)

    heard = Heard()
    with context(lm=answers("x", "y"), callbacks=[heard], adapter=Counting()):
        result = Predict("question -> answer", n=2)(question="q")
    assert sorted(seen) == [0, 1] and len(result.completions) == 2
    assert [kind for kind, _ in heard.events].count("lm+") == 2
