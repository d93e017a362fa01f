"""Signature strings: what parses, and where and why a malformed one fails."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

import pydantic
import pytest

from dspex.errors import SignatureError
from dspex.signatures import make_signature


class Answer(pydantic.BaseModel):
    value: int


def test_plain_fields_default_to_str_in_order() -> None:
    sig = make_signature("question, context -> answer")
    assert list(sig.input_fields) == ["question", "context"]
    assert list(sig.output_fields) == ["answer"]
    assert [spec.annotation for spec in sig.fields.values()] == [str, str, str]
    assert sig.signature_string == "question, context -> answer"


def test_default_instructions_are_dspys() -> None:
    sig = make_signature("question, context -> answer, score")
    assert sig.instructions == "Given the fields `question`, `context`, produce the fields `answer`, `score`."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("list[str]", list[str]),
        ("dict[str, list[int]]", dict[str, list[int]]),
        ("tuple[int, ...]", tuple[int, ...]),
        ("set[str]", set[str]),
        ("Optional[int]", Optional[int]),  # noqa: UP045 - the spelling under test
        ("int | None", Optional[int]),  # noqa: UP045
        ("Union[int, str]", Union[int, str]),  # noqa: UP007
        ('Literal["a", "b"]', Literal["a", "b"]),
        ("Literal['x', 1, True, None]", Literal["x", 1, True, None]),
        ("Any", Any),
        ("List[str]", list[str]),
        ("float", float),
        ("bool", bool),
    ],
)
def test_types_parse_without_eval(text: str, expected: Any) -> None:
    sig = make_signature(f"question -> answer: {text}")
    assert sig.output_fields["answer"].annotation == expected


def test_custom_types_by_name_and_by_import_path() -> None:
    by_name = make_signature("question -> answer: Answer", custom_types={"Answer": Answer})
    assert by_name.output_fields["answer"].annotation is Answer
    by_path = make_signature("question -> answer: pydantic:BaseModel, more: list[pydantic:BaseModel]")
    assert by_path.output_fields["answer"].annotation is pydantic.BaseModel
    assert by_path.output_fields["more"].annotation == list[pydantic.BaseModel]


def test_whitespace_and_newlines_are_ignored() -> None:
    sig = make_signature("  question ,\n context : list[ str ]\t->  answer:int ")
    assert sig.signature_string == "question, context -> answer"
    assert sig.input_fields["context"].annotation == list[str]


def test_no_inputs_is_allowed() -> None:
    assert list(make_signature("-> story").output_fields) == ["story"]


def _error(text: str, **kwargs: Any) -> str:
    with pytest.raises(SignatureError) as info:
        make_signature(text, **kwargs)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("question answer", 9, "expected ',' or '->' after field 'question'"),
        ("question", 8, "expected '->' separating inputs from outputs"),
        ("question, -> answer", 10, "field name expected"),
        ("question -> ", 12, "output field name expected"),
        ("question -> answer -> more", 19, "unexpected second '->'"),
        ("question, context: lsit[str] -> answer", 19, "unknown type 'lsit[str]' for field 'context'"),
        ("q: list[int -> a", 12, "malformed type for field 'q'"),
        ("q: int[str] -> a", 3, "'int' is not generic"),
        ("q: dict[str] -> a", 3, "2 type argument(s)"),
        ("q: Literal[str] -> a", 11, "a literal value"),
        ("q: 'x' -> a", 3, "not a literal value"),
        ('q: Literal["a] -> b', 11, 'closing "'),
        ("q, q -> a", 3, "duplicate field name 'q'"),
        ("q -> q", 5, "must have distinct names"),
        ("q -> completed", 5, "reserved"),
        ("q -> _hidden", 5, "starts with '_'"),
        ("1q -> a", 0, "field name expected"),
        ("q -> a: Missing", 8, "unknown type 'Missing'"),
    ],
)
def test_malformed_strings_name_position_and_expectation(text: str, position: int, expected: str) -> None:
    message = _error(text)
    assert expected in message
    assert f"at position {position}" in message, message


def test_unknown_type_message_tells_how_to_fix() -> None:
    message = _error("q -> a: NowhereDefined")
    assert "custom_types" in message and "pkg.module:Name" in message


def test_import_path_that_is_not_a_class() -> None:
    assert "is not a class" in _error("q -> a: os:sep")


def test_non_string_spec_is_rejected() -> None:
    with pytest.raises(SignatureError, match=re.escape("cannot make a signature from a int")):
        make_signature(3)  # type: ignore[arg-type]
