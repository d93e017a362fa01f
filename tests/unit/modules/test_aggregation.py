"""majority(): DSPy's voting over completions."""

from __future__ import annotations

import dspy
import pytest
from dspy.predict.aggregation import majority as dspy_majority

from dspex.errors import InputError
from dspex.modules import majority
from dspex.primitives import Prediction

ROWS = [
    {"reasoning": "r1", "answer": "The Paris"},
    {"reasoning": "r2", "answer": "London"},
    {"reasoning": "r3", "answer": "paris."},
    {"reasoning": "r4", "answer": "London"},
    {"reasoning": "r5", "answer": "Paris"},
]


def test_the_most_common_normalized_answer_wins_as_the_first_completion_with_it() -> None:
    voted = majority([Prediction(**row) for row in ROWS])
    assert isinstance(voted, Prediction) and dict(voted.items()) == ROWS[0]
    theirs = dspy_majority([dspy.Prediction(**row) for row in ROWS])
    assert theirs.answer == voted.answer


def test_ties_go_to_the_first_value_and_field_and_normalize_can_be_chosen() -> None:
    rows = [{"a": "x", "b": "1"}, {"a": "y", "b": "2"}, {"a": "y", "b": "1"}, {"a": "x", "b": "2"}]
    assert majority(rows)["b"] == "1"
    assert majority(rows, field="a")["a"] == "x"
    assert majority([{"a": "X"}, {"a": "x"}, {"a": "y"}, {"a": "y"}], normalize=None)["a"] == "y"


def test_values_that_normalize_to_none_do_not_vote() -> None:
    rows = [{"answer": "..."}, {"answer": "..."}, {"answer": "42"}]
    assert majority(rows)["answer"] == "42"
    assert majority([{"answer": "!"}, {"answer": "?"}])["answer"] == "!"  # nobody votes: all count


def test_bad_input_is_an_input_error() -> None:
    with pytest.raises(InputError, match="at least one"):
        majority([])
    with pytest.raises(InputError, match="has no field 'answer'"):
        majority([{"answer": "1"}, {"other": "2"}])
    with pytest.raises(InputError, match="predictions or dicts"):
        majority(["4", "4"])  # type: ignore[list-item]
