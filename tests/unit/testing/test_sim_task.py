"""The arithmetic task: datasets, question parsing and the accuracy model's arithmetic."""

from __future__ import annotations

import pytest

from dspex.errors import ConfigurationError
from dspex.testing import arithmetic_dataset, arithmetic_rows
from dspex.testing.task import (
    MAX_ACCURACY,
    Question,
    accuracy,
    instruction_phrases_in,
    near_miss,
    parse_question,
)


def test_rows_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    assert arithmetic_rows(50, seed=3) == arithmetic_rows(50, seed=3)
    assert arithmetic_rows(50, seed=3) != arithmetic_rows(50, seed=4)


def test_rows_are_distinct_and_labelled_with_the_right_answer() -> None:
    rows = arithmetic_rows(2000, seed=1)
    assert len({row["question"] for row in rows}) == 2000
    for row in rows:
        question = parse_question(row["question"])
        assert question is not None, row
        assert row["answer"] == str(question.answer)
    assert {parse_question(r["question"]).op for r in rows} == {"+", "-", "*"}  # type: ignore[union-attr]


def test_dataset_gives_examples_with_question_as_input() -> None:
    examples = arithmetic_dataset(5, seed=2)
    assert [dict(e.items()) for e in examples] == arithmetic_rows(5, seed=2)
    assert set(examples[0].inputs().keys()) == {"question"}
    assert set(examples[0].labels().keys()) == {"answer"}


def test_negative_size_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="n >= 0"):
        arithmetic_rows(-1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is 347 + 28?", Question(347, "+", 28)),
        ("what is 12 * 3", Question(12, "*", 3)),
        ("  5 - 9 ? ", Question(5, "-", 9)),
        ("What is 347 + 28? And 1 + 1?", None),
        ("Summarize: What is 1 + 2?", None),
        ("hello", None),
    ],
)
def test_parse_question_needs_the_whole_text_to_be_a_question(text: str, expected: Question | None) -> None:
    assert parse_question(text) == expected


def test_near_miss_is_wrong_by_one_to_ten() -> None:
    misses = {near_miss(100, draw) for draw in range(0, 5000, 7)}
    assert 100 not in misses
    assert misses <= set(range(90, 111))
    assert any(m < 100 for m in misses) and any(m > 100 for m in misses)


def test_accuracy_model_numbers() -> None:
    assert accuracy(correct_demos=0, instruction_phrases=0, reasoning=False) == pytest.approx(0.45)
    assert accuracy(correct_demos=4, instruction_phrases=0, reasoning=False) == pytest.approx(0.85)
    assert accuracy(correct_demos=9, instruction_phrases=0, reasoning=False) == pytest.approx(0.85)
    assert accuracy(correct_demos=0, instruction_phrases=2, reasoning=True) == pytest.approx(0.65)
    assert accuracy(correct_demos=4, instruction_phrases=2, reasoning=True) == MAX_ACCURACY


def test_instruction_phrases_are_counted_once_each_case_insensitively() -> None:
    assert instruction_phrases_in("Answer the question.") == 0
    assert instruction_phrases_in("Think Step By Step, step by step.") == 1
    assert instruction_phrases_in("Work step by step and double check the arithmetic.") == 2
    assert instruction_phrases_in("Double-check your sums.") == 1
