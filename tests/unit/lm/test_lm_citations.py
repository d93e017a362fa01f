"""LM._extract_citations_from_response: Anthropic-style citations of one answer choice."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import dspex

LM = dspex.LM("openai/test-model")


def one(text: str, index: int) -> dict[str, Any]:
    return {"type": "char_location", "cited_text": text, "document_index": index}


def test_groups_of_citations_are_flattened_in_order() -> None:
    choice = {
        "message": {
            "content": "x",
            "provider_specific_fields": {"citations": [[one("a", 0), one("b", 1)], [one("c", 2)]]},
        }
    }
    found = LM._extract_citations_from_response(choice)
    assert found is not None
    assert [c["cited_text"] for c in found] == ["a", "b", "c"]


def test_attribute_shaped_choice_and_a_bare_citation() -> None:
    message = SimpleNamespace(provider_specific_fields={"citations": [one("solo", 4)]})
    found = LM._extract_citations_from_response(SimpleNamespace(message=message))
    assert found == [one("solo", 4)]


def test_no_citations_gives_none() -> None:
    assert LM._extract_citations_from_response({"message": {"content": "plain"}}) is None
    assert LM._extract_citations_from_response({"message": None}) is None
    assert LM._extract_citations_from_response(SimpleNamespace()) is None
    fields = {"message": {"provider_specific_fields": {"citations": "not a list"}}}
    assert LM._extract_citations_from_response(fields) is None
