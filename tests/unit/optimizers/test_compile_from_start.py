"""An optimizer's compile keywords are written once, on ``start``: ``acompile`` and ``compile`` are
made from it, show its keywords (``state`` aside) and refuse others as ``start`` does."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.optimizers import (
    COPRO,
    SIMBA,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    LabeledFewShot,
    MIPROv2,
    Optimizer,
)

STEPWISE = [LabeledFewShot, BootstrapFewShot, BootstrapFewShotWithRandomSearch, COPRO, MIPROv2, SIMBA]


def _keywords(method: Any) -> list[str]:
    return [p.name for p in inspect.signature(method).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("cls", STEPWISE, ids=lambda cls: cls.__name__)
def test_acompile_and_compile_show_the_keywords_of_start(cls: type[Optimizer]) -> None:
    expected = [name for name in _keywords(cls.start) if name not in ("state", "unknown")]  # type: ignore[attr-defined]
    assert _keywords(cls.acompile) == expected
    assert _keywords(cls.compile) == expected
    assert {"student", "trainset", "executor"} <= set(expected)
    assert inspect.iscoroutinefunction(cls.acompile)
    assert cls.acompile.__qualname__ == f"{cls.__name__}.acompile"
    assert inspect.signature(cls.acompile).return_annotation == "Module"


def test_dspy_keyword_names_are_shown() -> None:
    assert "sample" in _keywords(LabeledFewShot.compile)
    assert {"teacher", "valset", "restrict", "labeled_sample"} <= set(
        _keywords(BootstrapFewShotWithRandomSearch.compile)
    )
    assert {"num_trials", "minibatch_size", "requires_permission_to_run"} <= set(_keywords(MIPROv2.compile))
    assert "eval_kwargs" in _keywords(COPRO.compile)


def test_an_unknown_keyword_is_refused_with_the_accepted_ones() -> None:
    student = dspex.Predict("question -> answer")
    trainset = [dspex.Example(question="q", answer="a").with_inputs("question")]
    with pytest.raises(ConfigurationError, match=r"LabeledFewShot\.compile: unknown argument\(s\) 'nope'"):
        LabeledFewShot(k=1).compile(student, trainset=trainset, nope=1)


def test_the_sync_compile_keeps_dropping_none_sets() -> None:
    # As before: compile passes only the sets given, so teacher=None reaches no optimizer's start.
    student = dspex.Predict("question -> answer")
    trainset = [dspex.Example(question="q", answer="a").with_inputs("question")]
    program = LabeledFewShot(k=1).compile(student, trainset=trainset, teacher=None)
    assert len(program.predictors()[0].demos) == 1


class _Subclass(LabeledFewShot):
    """A subclass that changes nothing keeps the derived methods (made again for its name)."""


class _DSPyStyle(Optimizer):
    def compile(self, student: Any, *, trainset: Any, flag: bool = False) -> Any:  # type: ignore[override]
        return student


def test_subclasses() -> None:
    assert _keywords(_Subclass.compile) == _keywords(LabeledFewShot.compile)
    assert _Subclass.compile.__qualname__ == "_Subclass.compile"
    # A DSPy-style optimizer keeps its own compile; acompile runs it in a thread.
    assert _keywords(_DSPyStyle.compile) == ["student", "trainset", "flag"]
    assert _DSPyStyle.acompile is Optimizer.acompile
    program = dspex.Predict("question -> answer")
    assert _DSPyStyle().compile(program, trainset=[]) is program
