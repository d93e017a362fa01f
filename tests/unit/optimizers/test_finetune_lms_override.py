"""BootstrapFinetune trains through a replaced ``finetune_lms`` (a subclass's or the object's own)."""

from __future__ import annotations

from typing import Any

import dspex
from dspex.primitives import Example
from dspex.utils import DummyLM


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = dspex.Predict("question -> answer")
        self.second = dspex.Predict("draft -> answer")

    def forward(self, question: str) -> Any:
        return self.second(draft=self.first(question=question).answer)


TRAIN = [Example(question=f"q{i}", answer="ok").with_inputs("question") for i in range(3)]


def exact(example: Example, prediction: Any, trace: Any = None) -> bool:
    return bool(prediction.answer == example.answer)


class Recording(dspex.BootstrapFinetune):
    def __init__(self, tuned: Any, **kwargs: Any) -> None:
        super().__init__(metric=exact, **kwargs)
        self.tuned = tuned
        self.calls: list[dict[Any, dict[str, Any]]] = []

    def finetune_lms(self, finetune_dict: Any) -> dict[Any, Any]:  # type: ignore[override]
        self.calls.append(dict(finetune_dict))
        return {key: self.tuned for key in finetune_dict}


def test_a_subclass_finetune_lms_gets_every_job_and_its_lms_are_used() -> None:
    base, tuned = DummyLM([{"answer": "ok"}] * 20), DummyLM([{"answer": "tuned"}])
    student = TwoSteps()
    student.set_lm(base)
    optimizer = Recording(tuned)
    assert optimizer.finetune_lms_replaced()
    program = optimizer.compile(student, trainset=TRAIN)
    [call] = optimizer.calls
    [(key, job)] = call.items()
    assert key == (base, None)  # multitask: one job for the LM, no predictor index
    assert job["lm"] is base and job["train_data_format"] == "chat"
    assert len(job["train_data"]) == 2 * len(TRAIN)  # both steps of every passing run
    assert program._compiled
    assert all(p.lm is tuned for p in program.predictors())


def test_without_multitask_each_predictor_is_its_own_key() -> None:
    base = DummyLM([{"answer": "ok"}] * 20)
    student = TwoSteps()
    student.set_lm(base)
    optimizer = Recording(DummyLM([{"answer": "t"}]), multitask=False)
    optimizer.compile(student, trainset=TRAIN)
    [call] = optimizer.calls
    assert sorted(index for _, index in call) == [0, 1]
    assert all(len(job["train_data"]) == len(TRAIN) for job in call.values())


def test_the_default_finetune_lms_is_not_counted_as_replaced() -> None:
    assert not dspex.BootstrapFinetune(metric=exact).finetune_lms_replaced()
