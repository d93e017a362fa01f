"""Prediction and Completions behave as DSPy 3.4.1's, and keep dspex's usage, trace and adapter."""

from __future__ import annotations

import pickle

import pytest

import dspex
from dspex.errors import InputError
from dspex.lm import Usage
from dspex.primitives import Example, Prediction
from dspex.primitives.prediction import Completions


def test_completions_is_exported_where_dspy_has_it() -> None:
    assert dspex.Completions is Completions is dspex.primitives.Completions


def test_from_completions_takes_the_first_as_fields_and_keeps_them_all() -> None:
    pred = Prediction.from_completions(
        [{"answer": "7", "why": "a"}, {"answer": "8", "why": "b"}], signature="q -> answer"
    )
    assert pred.toDict() == {"answer": "7", "why": "a"}
    assert pred.completions is not None and len(pred.completions) == 2
    assert pred.completions.answer == ["7", "8"] and pred.completions["why"] == ["a", "b"]
    assert pred.completions[1] == Prediction(answer="8", why="b")
    assert pred.completions.signature == "q -> answer"
    assert [c.answer for c in pred.completions] == ["7", "8"]


def test_completions_from_a_dict_of_lists_and_its_errors() -> None:
    group = Completions({"answer": ["x", "y", "z"]})
    assert len(group) == 3 and "answer" in group and "other" not in group
    assert dict(group.items()) == {"answer": ["x", "y", "z"]}
    assert repr(group) == str(group) == "Completions(\n    answer=['x', 'y', 'z']\n)"
    with pytest.raises(IndexError):
        group[3]
    with pytest.raises(IndexError):
        group[-1]  # DSPy refuses negative indexes too
    with pytest.raises(AttributeError):
        _ = group.missing
    with pytest.raises(ValueError, match="one value per completion"):
        Completions({"a": [1, 2], "b": [1]})
    with pytest.raises(InputError, match="dict of lists"):
        Completions({"a": "not a list"})
    assert len(Completions([])) == 0


def test_repr_is_one_field_a_line_and_counts_omitted_completions() -> None:
    assert repr(Prediction(answer="5", why="sum")) == "Prediction(\n    answer='5',\n    why='sum'\n)"
    many = Prediction.from_completions({"answer": ["1", "2", "3"]})
    assert (
        str(many)
        == "Prediction(\n    answer='1',\n    completions=Completions(...)\n) (2 completions omitted)"
    )
    assert repr(Prediction.from_completions([{"answer": "1"}])) == "Prediction(\n    answer='1'\n)"


def test_a_score_field_makes_the_prediction_a_number() -> None:
    high, low = Prediction(score=0.75, feedback="good"), Prediction(score=0.25)
    assert float(high) == 0.75
    assert high + 1 == 1.75 and 1 + high == 1.75 and high + low == 1.0
    assert sum([high, low]) == 1.0  # sum() starts from 0 and goes through __radd__
    assert high / 2 == 0.375 and 3 / high == 4.0 and high / low == 3.0
    assert low < high and high > 0.5 and high >= 0.75 and low <= 0.25 and not high < 0.5
    assert max([low, high]) is high
    assert high != 0.75  # equality stays by fields, as in DSPy


def test_score_arithmetic_refuses_what_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="no 'score' field"):
        float(Prediction(answer="x"))
    with pytest.raises(TypeError):
        Prediction(score=1.0) + "1"  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = Prediction(score=1.0) < "1"  # type: ignore[operator]


def test_lm_usage_is_set_and_read_as_dspy_does() -> None:
    pred = Prediction(answer="x")
    assert pred.get_lm_usage() is None
    pred.set_lm_usage({"openai/gpt-4o-mini": {"total_tokens": 10}})
    assert pred.get_lm_usage() == {"openai/gpt-4o-mini": {"total_tokens": 10}}


def test_dspex_extras_survive_copies_and_pickle() -> None:
    pred = Prediction(answer="x")
    assert pred.usage == Usage() and pred.trace == [] and pred.adapter is None
    pred._usage = Usage(prompt_tokens=3, completion_tokens=2, lm_calls=1)
    pred._adapter = "json"
    copied = pred.copy(answer="y")
    assert copied.usage.total_tokens == 5 and copied.adapter == "json" and copied.answer == "y"
    assert copied.trace is not pred.trace
    restored = pickle.loads(pickle.dumps(pred))
    assert restored == pred and restored.usage == pred.usage and restored.adapter == "json"
    assert Prediction(Example(answer="z")).usage == Usage()
    assert not hasattr(pred, "__dict__")


def test_a_prediction_keeps_dspy_hidden_fields_out_of_listings() -> None:
    pred = Prediction(answer="x", dspy_note="internal")
    assert pred.keys() == ["answer"] and len(pred) == 1
    assert pred.keys(include_dspy=True) == ["answer", "dspy_note"]
