"""ChatAdapter: parsing of [[ ## field ## ]] answers into typed values, and what it refuses."""

from __future__ import annotations

import enum
from typing import Literal

import pydantic
import pytest

from dspex.adapters import ChatAdapter
from dspex.errors import AdapterParseError, ConfigurationError
from dspex.signatures import InputField, OutputField, Signature, make_signature


class Point(pydantic.BaseModel):
    x: int
    y: int


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Typed(Signature):
    question: str = InputField()
    count: int = OutputField(ge=0)
    ratio: float = OutputField()
    ok: bool = OutputField()
    kind: Literal["a", "b"] = OutputField()
    tags: list[str] = OutputField()
    scores: dict[str, int] = OutputField()
    point: Point = OutputField()
    mood: Mood = OutputField()
    note: str | None = OutputField()


def answer(**sections: str) -> str:
    body = "\n\n".join(f"[[ ## {name} ## ]]\n{value}" for name, value in sections.items())
    return body + "\n\n[[ ## completed ## ]]\n"


GOOD = {
    "count": "3",
    "ratio": "0.5",
    "ok": "True",
    "kind": "'b'",
    "tags": '["x", "y"]',
    "scores": "{'a': 1}",
    "point": '```json\n{"x": 1, "y": 2}\n```',
    "mood": "SAD",
    "note": "kept as text",
}


def test_typed_outputs_parse() -> None:
    outputs = ChatAdapter().parse(Typed, answer(**GOOD))
    assert outputs == {
        "count": 3, "ratio": 0.5, "ok": True, "kind": "b", "tags": ["x", "y"], "scores": {"a": 1},
        "point": Point(x=1, y=2), "mood": Mood.SAD, "note": "kept as text",
    }  # fmt: skip


def test_str_fields_keep_text_verbatim_and_first_section_wins() -> None:
    sig = make_signature("question -> answer")
    text = (
        "preamble\n[[ ## answer ## ]]\n  line one\n\nline two  \n"
        "[[ ## answer ## ]]\nignored\n[[ ## completed ## ]]"
    )
    assert ChatAdapter().parse(sig, text) == {"answer": "line one\n\nline two"}


def test_value_on_the_header_line_counts() -> None:
    sig = make_signature("question -> answer: int")
    assert ChatAdapter().parse(sig, "[[ ## answer ## ]] 42") == {"answer": 42}


def test_missing_fields_are_named_and_raw_text_kept() -> None:
    sig = make_signature("question -> reasoning, answer: int")
    text = "[[ ## reasoning ## ]]\nthinking"
    with pytest.raises(AdapterParseError) as info:
        ChatAdapter().parse(sig, text)
    assert "parsed from the LM response: [reasoning]" in str(info.value)
    assert info.value.raw_text == text and info.value.adapter == "ChatAdapter"
    assert info.value.parsed_result == {"reasoning": "thinking"}


def test_missing_optional_field_becomes_none() -> None:
    sig = make_signature("question -> answer, extra: int | None")
    assert ChatAdapter().parse(sig, answer(answer="yes")) == {"answer": "yes", "extra": None}


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("count", "three"),
        ("count", "-1"),  # violates ge=0
        ("ratio", "n/a"),
        ("kind", "c"),
        ("tags", "x, y"),
        ("point", '{"x": 1}'),
        ("mood", "angry"),
    ],
)
def test_values_that_do_not_validate_are_parse_errors(field: str, bad: str) -> None:
    text = answer(**{**GOOD, field: bad})
    with pytest.raises(AdapterParseError) as info:
        ChatAdapter().parse(Typed, text)
    assert info.value.field == field
    assert info.value.raw_text == text
    assert f"Failed to parse field {field} with value" in str(info.value)


def test_literal_numbers_coerce_from_text() -> None:
    sig = make_signature("q -> level: Literal[1, 2, 3]")
    assert ChatAdapter().parse(sig, answer(level="2")) == {"level": 2}
    assert ChatAdapter().parse(sig, answer(level="Literal[3]")) == {"level": 3}


def test_empty_output_is_a_parse_error() -> None:
    with pytest.raises(AdapterParseError, match=r"LM Response: \(empty\)"):
        ChatAdapter().parse(make_signature("q -> a"), "")


def test_assistant_message_of_a_demo_reads_back() -> None:
    adapter = ChatAdapter()
    values = {"count": 2, "ratio": 1.5, "ok": False, "kind": "a", "tags": ["t"], "scores": {"k": 1},
              "point": Point(x=0, y=1), "mood": Mood.HAPPY, "note": "n"}  # fmt: skip
    text = adapter.format_assistant_message_content(Typed, values)
    assert adapter.parse(Typed, text) == values


class ExampleLike:
    """Something with to_dict(), like dspex.Example."""

    def __init__(self, **values: object) -> None:
        self.values = values

    def to_dict(self) -> dict[str, object]:
        return dict(self.values)


def test_demos_may_be_example_objects_and_signature_strings_work() -> None:
    adapter = ChatAdapter()
    as_dicts = adapter.format("question -> answer", [{"question": "q", "answer": "a"}], {"question": "x"})
    demo = ExampleLike(question="q", answer="a")
    as_objects = adapter.format("question -> answer", [demo], {"question": "x"})
    assert as_objects == as_dicts and len(as_dicts) == 4


def test_a_demo_that_is_not_a_mapping_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="demo #1 is a int"):
        ChatAdapter().format("question -> answer", [{"question": "q", "answer": "a"}, 7], {"question": "x"})
