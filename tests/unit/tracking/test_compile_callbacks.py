"""A stepwise compile is heard by callbacks (on_compile_start / on_compile_end), which is what the
MLflow callback logs an optimization from."""

from __future__ import annotations

from typing import Any

from dspex.configuration import context
from dspex.modules import Predict
from dspex.optimizers.labeled import LabeledFewShot
from dspex.primitives import Example
from dspex.utils.callback import BaseCallback


class Heard(BaseCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Any]] = []

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("start", instance, inputs.get("trainset")))

    def on_compile_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self.events.append(("end", outputs, exception))


def test_a_stepwise_compile_announces_its_start_and_end() -> None:
    trainset = [Example(question=str(n), answer=str(n)).with_inputs("question") for n in range(3)]
    optimizer, heard = LabeledFewShot(k=2), Heard()
    with context(callbacks=[heard]):
        compiled = optimizer.compile(Predict("question -> answer"), trainset=trainset)
    assert [event[0] for event in heard.events] == ["start", "end"]
    assert heard.events[0][1] is optimizer and heard.events[0][2] == trainset
    assert heard.events[1][1] is compiled and heard.events[1][2] is None
    assert len(compiled.predictors()[0].demos) == 2
