"""The process-wide LM history (DSPy's ``dspy.clients.base_lm.GLOBAL_HISTORY``): a list, bounded."""

from __future__ import annotations

import importlib
import io
from collections.abc import Iterator

import pytest

import dspex
from dspex.configuration import reset_settings
from dspex.lm import base
from dspex.utils import DummyLM


@pytest.fixture(autouse=True)
def fresh_history() -> Iterator[None]:
    reset_settings()
    base.GLOBAL_HISTORY.clear()
    yield
    base.GLOBAL_HISTORY.clear()
    reset_settings()


def test_calls_land_in_a_plain_list_under_dspys_path() -> None:
    dspex.configure(lm=DummyLM([{"answer": "Paris"}, {"answer": "Rome"}]))
    program = dspex.Predict("question -> answer")
    program(question="capital of France?")
    program(question="capital of Italy?")

    history = importlib.import_module("dspex.clients.base_lm").GLOBAL_HISTORY
    assert history is base.GLOBAL_HISTORY
    assert type(history) is list
    assert [entry["outputs"][0].rsplit("\n", 1)[-1] for entry in history] == ["Paris", "Rome"]
    assert "Italy" in str(history[-1]["messages"])
    out = io.StringIO()
    dspex.inspect_history(n=1, file=out)
    assert "Italy" in out.getvalue() and "France" not in out.getvalue()


def test_the_oldest_calls_are_dropped_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "MAX_HISTORY_SIZE", 3)
    dspex.configure(lm=DummyLM([{"answer": str(n)} for n in range(5)]))
    program = dspex.Predict("question -> answer")
    for n in range(5):
        program(question=f"q{n}")

    assert len(base.GLOBAL_HISTORY) == 3
    assert [entry["outputs"][0][-1] for entry in base.GLOBAL_HISTORY] == ["2", "3", "4"]


def test_clearing_it_empties_what_inspect_history_shows() -> None:
    dspex.configure(lm=DummyLM([{"answer": "x"}]))
    dspex.Predict("question -> answer")(question="anything")
    base.GLOBAL_HISTORY.clear()
    out = io.StringIO()
    dspex.inspect_history(file=out)
    assert "anything" not in out.getvalue()
