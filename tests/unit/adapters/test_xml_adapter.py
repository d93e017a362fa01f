"""XMLAdapter: values written as XML read back as the same typed values, and malformed answers refused."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from dspex.adapters import XMLAdapter
from dspex.adapters.chat import FieldInfoWithName
from dspex.errors import AdapterParseError
from dspex.signatures import InputField, OutputField, Signature


class City(pydantic.BaseModel):
    name: str
    zip_code: str = pydantic.Field(alias="zip code")


class Trip(Signature):
    """Plan a trip."""

    request: str = InputField()
    summary: str = OutputField()
    stops: list[City] = OutputField()
    budget: dict[str, float] = OutputField()
    nights: int = OutputField()
    note: str | None = OutputField()


TRIP = {
    "summary": "Two cities </summary> & more",
    "stops": [City(name="Ghent", **{"zip code": "9000"}), City(name="Lyon", **{"zip code": "69001"})],
    "budget": {"train tickets": 120.5, "food": 80.0},
    "nights": 4,
    "note": "bring an umbrella",
}


def test_an_answer_written_by_the_adapter_reads_back() -> None:
    adapter = XMLAdapter()
    text = adapter.format_assistant_message_content(Trip, TRIP)
    assert "&lt;/summary> &amp; more" in text
    assert '<entry key="train tickets">120.5</entry>' in text
    assert "<zip_code>9000</zip_code>" in text  # field names, not aliases, as tags
    assert adapter.parse(Trip, text) == TRIP


def test_structure_shows_nested_shapes_and_the_reminder_names_the_tags() -> None:
    adapter = XMLAdapter()
    system = adapter.format_system_message(Trip)
    assert "<stops><item><name>...</name><zip_code>...</zip_code></item></stops>" in system
    assert "<request>\n{request}\n</request>" in system
    user = adapter.format(Trip, [], {"request": "a week in Europe"})[-1]["content"]
    assert user.startswith("<request>\na week in Europe\n</request>\n\n")
    assert "`<summary>`, then `<stops>`" in user and "Use this nested XML structure: <stops>" in user


def test_json_inside_a_tag_and_repeated_elements_are_read() -> None:
    completion = (
        '<summary>s</summary><stops>[{"name": "Ghent", "zip code": "9000"}]</stops>'
        "<budget><food>1</food></budget><nights>2</nights>"
    )
    parsed = XMLAdapter().parse(Trip, completion)
    assert parsed["stops"] == [City(name="Ghent", **{"zip code": "9000"})] and parsed["note"] is None
    assert parsed["budget"] == {"food": 1.0} and parsed["nights"] == 2

    class Counts(Signature):
        counts: dict[str, list[int]] = OutputField()

    assert XMLAdapter().parse(Counts, "<counts><a>1</a><a>2</a><b>3</b></counts>") == {
        "counts": {"a": [1, 2], "b": [3]}
    }


@pytest.mark.parametrize(
    ("completion", "message"),
    [
        ("<summary>unclosed", "Failed to parse XML"),
        ("<summary>s</summary><stops /><budget /><nights>many</nights>", "Failed to parse field nights"),
        ("<summary>s</summary>", "Expected to find output fields"),
    ],
)
def test_bad_answers_are_parse_errors(completion: str, message: str) -> None:
    with pytest.raises(AdapterParseError, match=message) as info:
        XMLAdapter().parse(Trip, completion)
    assert info.value.adapter_name == "XMLAdapter" and info.value.lm_response == completion


def test_plain_fields_are_written_between_tags_on_their_own_lines() -> None:
    field = FieldInfoWithName("summary", Trip.output_fields["summary"])
    values: dict[FieldInfoWithName, Any] = {field: "a < b"}
    assert XMLAdapter().format_field_with_value(values) == "<summary>\na &lt; b\n</summary>"
    empty = FieldInfoWithName("stops", Trip.output_fields["stops"])
    assert XMLAdapter().format_field_with_value({empty: []}) == "<stops />"
