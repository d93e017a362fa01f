"""dspex.adapters.utils: DSPy's value parsing and prompt-writing helpers, as custom adapters use them."""

from __future__ import annotations

import enum
from typing import Any, Literal

import pydantic
import pytest

from dspex.adapters.utils import (
    apply_output_field_defaults,
    format_field_value,
    get_annotation_name,
    get_field_description_string,
    parse_value,
    translate_field_type,
)
from dspex.signatures import InputField, OutputField, Signature


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


class Box(pydantic.BaseModel):
    width: int
    label: str = ""


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        (7, str, "7"),
        ({"a": 1}, str, "{'a': 1}"),  # str() of the value, as DSPy does
        ("12", int, 12),
        ("```json\n[1, 2]\n```", list[int], [1, 2]),  # json_repair reads through the fence
        ("{'width': 3}", Box, Box(width=3)),  # a Python literal
        ('The box: {"width": 4}', Box, Box(width=4)),
        ("l", Size, Size.LARGE),
        ("LARGE", Size, Size.LARGE),
        ("Literal['b']", Literal["a", "b"], "b"),
        ("2", Literal[1, 2], 2),
        ("see [1]", str | None, "see [1]"),
        (None, int | None, None),
    ],
)
def test_parse_value(value: Any, annotation: Any, expected: Any) -> None:
    assert parse_value(value, annotation) == expected


@pytest.mark.parametrize(("value", "annotation"), [("huge", Size), ("c", Literal["a", "b"]), ("x", int)])
def test_parse_value_refuses_with_a_value_error(value: str, annotation: Any) -> None:
    with pytest.raises(ValueError):
        parse_value(value, annotation)


class Sig(Signature):
    """Measure."""

    items: str = InputField(desc="things")  # a list given to a str field is a numbered list
    box: Box = InputField()
    size: Size = OutputField(desc="how big")
    count: int = OutputField(default=0)
    notes: list[str] | None = OutputField()
    total: float = OutputField()


def test_values_and_placeholders_are_written_as_dspy_writes_them() -> None:
    assert format_field_value(Sig.input_fields["items"], ["a", "b"]) == "[1] «a»\n[2] «b»"
    assert format_field_value(Sig.input_fields["box"], Box(width=2)) == '{"width": 2, "label": ""}'
    assert format_field_value(Sig.input_fields["box"], "x", assume_text=False) == {
        "type": "text",
        "text": "x",
    }
    assert translate_field_type("box", Sig.input_fields["box"]) == "{box}"
    assert translate_field_type("size", Sig.output_fields["size"]) == (
        "{size}        # note: the value you produce must be one of: s; l"
    )
    assert get_annotation_name(dict[str, int | None]) == "dict[str, Union[int, NoneType]]"
    assert get_field_description_string(Sig.output_fields).startswith(
        "1. `size` (Size): how big\n2. `count` (int):"
    )


def test_missing_outputs_take_their_defaults_in_signature_order() -> None:
    filled = apply_output_field_defaults(Sig, {"total": 1.5, "size": Size.SMALL})
    assert list(filled) == ["size", "count", "notes", "total"]
    assert filled == {"size": Size.SMALL, "count": 0, "notes": None, "total": 1.5}
    assert apply_output_field_defaults(Sig, {}) == {"count": 0, "notes": None}  # required ones stay missing
