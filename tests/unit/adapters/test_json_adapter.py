"""JSONAdapter: request options, prompt shape, and reading a JSON object out of LM text."""

from __future__ import annotations

import json

import pydantic
import pytest

from dspex.adapters import JSONAdapter
from dspex.adapters.json_adapter import extract_json_object
from dspex.errors import AdapterParseError
from dspex.signatures import InputField, OutputField, Signature, make_signature


class Point(pydantic.BaseModel):
    x: int
    y: int


class Geo(Signature):
    """Locate the place."""

    place: str = InputField()
    reasoning: str = OutputField()
    point: Point = OutputField()
    zoom: int = OutputField()


def test_request_options_ask_for_json() -> None:
    assert JSONAdapter().request_options(Geo) == {"response_format": {"type": "json_object"}}


def test_structured_outputs_send_a_strict_schema() -> None:
    options = JSONAdapter(structured_outputs=True).request_options(Geo)
    response_format = options["response_format"]
    assert response_format["type"] == "json_schema"
    schema = response_format["json_schema"]["schema"]
    assert schema["required"] == ["reasoning", "point", "zoom"]
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Point"]["required"] == ["x", "y"]
    json.dumps(options)  # must travel in a request body


def test_structured_outputs_fall_back_to_json_mode_for_open_mappings() -> None:
    sig = make_signature("q -> scores: dict[str, int]")
    assert JSONAdapter(structured_outputs=True).request_options(sig) == {
        "response_format": {"type": "json_object"}
    }


def test_format_describes_a_json_answer_and_demos_answer_in_json() -> None:
    demo = {"place": "Paris", "reasoning": "capital", "point": Point(x=2, y=48), "zoom": 5}
    messages = JSONAdapter().format(Geo, [demo], {"place": "Rome"})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "Outputs will be a JSON object with the following fields." in messages[0]["content"]
    assert json.loads(messages[2]["content"]) == {
        "reasoning": "capital", "point": {"x": 2, "y": 48}, "zoom": 5
    }  # fmt: skip
    assert messages[3]["content"].endswith(
        "Respond with a JSON object in the following order of fields: `reasoning`, then `point` "
        "(must be formatted as a valid Python Point), then `zoom` (must be formatted as a valid Python int)."
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"reasoning": "r", "point": {"x": 1, "y": 2}, "zoom": "3"}',
        'Sure! Here it is:\n{"reasoning": "r {braces} in text", "point": {"x": 1, "y": 2}, "zoom": 3}\nDone.',
        '```json\n{"reasoning": "r", "point": {"x": 1, "y": 2}, "zoom": 3, "extra": 1}\n```',
        "{'reasoning': 'r', 'point': {'x': 1, 'y': 2}, 'zoom': 3}",
    ],
)
def test_parse_reads_the_object_in_the_text(text: str) -> None:
    outputs = JSONAdapter().parse(Geo, text)
    assert outputs["point"] == Point(x=1, y=2) and outputs["zoom"] == 3
    assert outputs["reasoning"].startswith("r")


def test_parse_refuses_text_without_an_object() -> None:
    with pytest.raises(AdapterParseError, match="cannot be serialized to a JSON object") as info:
        JSONAdapter().parse(Geo, "[1, 2, 3]")
    assert info.value.raw_text == "[1, 2, 3]" and info.value.adapter == "JSONAdapter"


def test_parse_names_missing_and_invalid_fields() -> None:
    with pytest.raises(AdapterParseError, match=r"parsed from the LM response: \[reasoning, point\]"):
        JSONAdapter().parse(Geo, '{"reasoning": "r", "point": {"x": 1, "y": 2}}')
    with pytest.raises(AdapterParseError) as info:
        JSONAdapter().parse(Geo, '{"reasoning": "r", "point": {"x": "far", "y": 2}, "zoom": 1}')
    assert info.value.field == "point"


def test_non_string_value_for_a_str_field_becomes_its_str() -> None:
    sig = make_signature("q -> a, b")  # DSPy's str(value), not JSON
    assert JSONAdapter().parse(sig, '{"a": 5, "b": {"k": [1]}}') == {"a": "5", "b": "{'k': [1]}"}


def test_extract_json_object_edge_cases() -> None:
    assert extract_json_object('{"a": "}"} trailing {"b": 1}') == {"a": "}"}
    assert extract_json_object("no object here") is None
    assert extract_json_object('{"unterminated": 1') == {"unterminated": 1}  # json_repair closes it
