"""DSPy's ``dspy.utils.exceptions`` helpers: ``format_error_for_lm`` and ``is_retryable_lm_error``."""

from __future__ import annotations

import importlib

import pytest

from dspex import errors
from dspex.errors import format_error_for_lm, is_retryable_lm_error


def _level_three() -> None:
    raise KeyError("no such column 'price'")


def _level_two() -> None:
    _level_three()


def _level_one() -> None:
    _level_two()


def _raised() -> BaseException:
    try:
        _level_one()
    except KeyError as error:
        return error
    raise AssertionError("unreachable")


def test_without_frames_only_the_message_is_shown() -> None:
    error = _raised()
    assert format_error_for_lm(error) == str(error) == "\"no such column 'price'\""
    assert format_error_for_lm(error, traceback_frames=0) == str(error)
    assert format_error_for_lm(error, traceback_frames=-3) == str(error)


def test_with_frames_the_traceback_follows_on_a_new_line() -> None:
    text = format_error_for_lm(_raised(), traceback_frames=10)
    assert text.startswith("\nTraceback (most recent call last):")
    assert text.endswith("KeyError: \"no such column 'price'\"")
    for function in ("_raised", "_level_one", "_level_two", "_level_three"):
        assert f"in {function}" in text


def test_the_frame_count_bounds_the_traceback() -> None:
    error = _raised()
    short = format_error_for_lm(error, traceback_frames=2)
    assert "in _raised" in short and "in _level_one" in short
    assert "in _level_three" not in short
    assert short.endswith("KeyError: \"no such column 'price'\"")


def test_an_error_never_raised_has_just_its_type_and_message() -> None:
    assert format_error_for_lm(ValueError("bad"), traceback_frames=5) == "\nValueError: bad"


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (errors.LMRateLimitError("slow down", status=429), True),
        (errors.LMServerError("upstream", status=503), True),
        (errors.LMTimeoutError("no answer"), True),
        (errors.LMTransportError("refused"), True),
        (errors.LMAuthError("bad key", status=401), False),
        (errors.LMInvalidRequestError("bad field", status=400), False),
        (errors.ContextWindowExceededError("too long"), False),
        (errors.LMUnexpectedError("odd"), False),
        (ValueError("not an LM error"), False),
    ],
)
def test_retryable_errors_are_the_transient_lm_failures(error: BaseException, retryable: bool) -> None:
    assert is_retryable_lm_error(error) is retryable


def test_dspy_programs_find_both_at_dspys_path() -> None:
    at_dspy_path = importlib.import_module("dspex.utils.exceptions")
    assert at_dspy_path.format_error_for_lm is format_error_for_lm
    assert at_dspy_path.is_retryable_lm_error is is_retryable_lm_error
