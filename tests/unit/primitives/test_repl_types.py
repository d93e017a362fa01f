"""REPLVariable, REPLEntry and REPLHistory: what the RLM prompt shows of the REPL."""

from __future__ import annotations

import pydantic
import pytest

import dspex
from dspex.primitives.repl_types import REPLEntry, REPLHistory, REPLVariable


def test_a_short_value_is_previewed_whole() -> None:
    var = REPLVariable.from_value("query", "What is 2+2?")
    assert (var.type_name, var.total_length, var.preview) == ("str", 12, "What is 2+2?")
    assert var.format() == (
        "Variable: `query` (access it in your code)\nType: str\nTotal length: 12 characters\n"
        "Preview:\n```\nWhat is 2+2?\n```"
    )


def test_a_long_value_keeps_its_head_and_tail() -> None:
    var = REPLVariable.from_value("big", "a" * 600 + "b" * 600, preview_chars=11)
    assert var.preview == "aaaaa...bbbbbb"
    assert var.total_length == 1200
    assert "Total length: 1,200 characters" in var.format()


def test_containers_are_previewed_as_indented_json() -> None:
    var = REPLVariable.from_value("data", {"k": [1, None]})
    assert var.type_name == "dict"
    assert var.preview == '{\n  "k": [\n    1,\n    null\n  ]\n}'


def test_field_metadata_describes_the_variable() -> None:
    field = dspex.InputField(desc="The user's question", ge=0)
    var = REPLVariable.from_value("query", 3, field_info=field)
    assert var.desc == "The user's question"
    assert "greater than or equal to" in var.constraints
    assert "Description: The user's question\nConstraints: " in var.format()


def test_a_placeholder_description_is_no_description() -> None:
    field = dspex.Signature("context -> answer").input_fields["context"]
    assert REPLVariable.from_value("context", "x", field_info=field).desc == ""


def test_entry_output_is_cut_in_the_middle_with_its_true_length() -> None:
    entry = REPLEntry(reasoning="why", code="print(x)", output="a" * 60 + "b" * 60)
    text = entry.format(index=2, max_output_chars=20)
    assert text.startswith(
        "=== Step 3 ===\nReasoning: why\nCode:\n```python\nprint(x)\n```\nOutput (120 chars):\n"
    )
    assert text.endswith("a" * 10 + "\n\n... (100 characters omitted) ...\n\n" + "b" * 10)


def test_entry_without_reasoning_has_no_reasoning_line() -> None:
    assert "Reasoning" not in REPLEntry(code="x", output="").format(index=0)


def test_history_is_immutable_and_keeps_its_output_limit() -> None:
    empty = REPLHistory(max_output_chars=4)
    one = empty.append(code="x = 1", output="abcdefgh")
    assert (len(empty), len(one), bool(empty), bool(one)) == (0, 1, False, True)
    assert [entry.code for entry in one] == ["x = 1"]
    assert one.max_output_chars == 4
    assert "4 characters omitted" in one.format()
    with pytest.raises(pydantic.ValidationError):
        one.max_output_chars = 10  # type: ignore[misc]


def test_an_empty_history_says_so() -> None:
    assert REPLHistory().format() == "You have not interacted with the REPL environment yet."


def test_history_and_variables_serialize_as_their_text() -> None:
    history = REPLHistory().append(reasoning="r", code="c", output="o")
    assert history.model_dump() == history.format()
    var = REPLVariable.from_value("x", 1)
    assert var.model_dump() == var.format()
    # entries stay structured: RLM's trajectory is made of them
    assert history.entries[0].model_dump() == {"reasoning": "r", "code": "c", "output": "o"}
