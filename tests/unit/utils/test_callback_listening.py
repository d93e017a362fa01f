"""Only the callbacks that override a kind's hooks hear that kind's calls."""

from __future__ import annotations

from typing import Any

import dspex
from dspex.utils import DummyLM
from dspex.utils.callback import BaseCallback, listening


class AttemptsOnly(BaseCallback):
    def on_lm_attempt(self, call_id: str | None, instance: Any, attempt: Any) -> None:
        pass


class ModuleEnds(BaseCallback):
    def __init__(self) -> None:
        self.ends: list[str] = []

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self.ends.append(call_id)


class DuckTyped:  # not a BaseCallback: every hook it has counts
    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        pass

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        pass


def test_a_callback_is_announced_only_the_kinds_it_overrides() -> None:
    attempts, ends, duck = AttemptsOnly(), ModuleEnds(), DuckTyped()
    assert listening([attempts], "module") == [] and listening([attempts], "lm") == []
    assert listening([attempts, ends], "module") == [ends]
    assert listening([duck], "module") == [duck]  # type: ignore[list-item]
    assert listening([], "lm") == []


def test_a_module_call_reaches_the_callback_that_listens_and_skips_the_other() -> None:
    ends = ModuleEnds()
    lm = DummyLM([{"answer": "4"}])
    with dspex.context(callbacks=[AttemptsOnly(), ends], lm=lm):
        assert dspex.Predict("question -> answer")(question="2+2?").answer == "4"
    assert len(ends.ends) == 1
