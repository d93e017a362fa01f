"""Reasoning (str-like), Code["lang"] (fences removed), Citations and Document (dspex.experimental)."""

from __future__ import annotations

import pydantic
import pytest

import dspex
from dspex.experimental import Citations, Document
from dspex.signatures import InputField, OutputField, Signature


def test_reasoning_behaves_as_a_string() -> None:
    reasoning = dspex.Reasoning(content="  Step one ")
    assert reasoning == "  Step one " and reasoning != "other"
    assert str(reasoning) == "  Step one " and repr(reasoning) == "'  Step one '"
    assert reasoning.strip().upper() == "STEP ONE"
    assert len(reasoning) == 11 and reasoning[2] == "S" and "one" in reasoning
    assert "> " + dspex.Reasoning(content="a") == "> a"
    assert isinstance(dspex.Reasoning(content="a") + dspex.Reasoning(content="b"), dspex.Reasoning)
    with pytest.raises(AttributeError, match="`Reasoning` object has no attribute 'nope'"):
        _ = reasoning.nope


def test_reasoning_native_adaptation() -> None:
    class Sig(Signature):
        question: str = InputField()
        reasoning: dspex.Reasoning = OutputField()
        answer: str = OutputField()

    class Lm:
        model = "openai/o3"
        model_type = "chat"
        kwargs: dict[str, object] = {}
        supports_reasoning = True

    lm_kwargs: dict[str, object] = {}
    adapted = dspex.Reasoning.adapt_to_native_lm_feature(Sig, "reasoning", Lm(), lm_kwargs)
    assert list(adapted.output_fields) == ["answer"] and lm_kwargs == {"reasoning_effort": "low"}
    off: dict[str, object] = {"reasoning_effort": None}
    assert dspex.Reasoning.adapt_to_native_lm_feature(Sig, "reasoning", Lm(), off) is Sig
    assert dspex.Reasoning.parse_lm_response({"reasoning_content": "why"}) == "why"


def test_code_strips_fences_and_knows_its_language() -> None:
    assert dspex.Code(code="```python\nprint(1)\n```").code == "print(1)"
    assert dspex.Code(code="Here:\n```\nx = 1\n```\nDone").code == "x = 1"
    java = dspex.Code["java"]
    assert java is dspex.Code["java"] and java.language == "java"
    assert "Programming language: java" in java.description()
    assert java(code="int x;").model_dump() == "int x;"  # no markers: code is text
    with pytest.raises(ValueError):
        dspex.Code["python"](code=123)


def test_citations_accept_loose_shapes() -> None:
    item = {"cited_text": "sky", "document_index": 0, "start_char_index": 0, "end_char_index": 3}
    for data in ([item], {"citations": [item]}, item):
        citations = Citations.model_validate(data)
        assert len(citations) == 1 and citations[0].cited_text == "sky"
    assert Citations.from_dict_list([item]).format() == [{"type": "char_location", **item}]
    assert Citations.parse_lm_response({"citations": [item]}) is not None
    assert Citations.parse_lm_response("text") is None
    with pytest.raises(pydantic.ValidationError):
        Citations.Citation(cited_text="only")


def test_document_format_and_shorthand() -> None:
    doc = Document(data="Water boils.", title="Physics", context="lab")
    assert doc.format() == [
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "Water boils."},
            "citations": {"enabled": True},
            "title": "Physics",
            "context": "lab",
        }
    ]
    assert Document.model_validate("plain").data == "plain"
    assert Document(data="x", media_type="application/pdf").format()[0]["source"]["type"] == "base64"
    assert str(doc) == "Document('Physics': 12 chars)"
    with pytest.raises(pydantic.ValidationError):
        Document(data=123)


def test_history_in_its_json_form_formats_like_the_object() -> None:
    class Chat(Signature):
        history: dspex.History = InputField()
        question: str = InputField()
        answer: str = OutputField()

    history = dspex.History(messages=[{"question": "q1", "answer": "a1"}])
    adapter = dspex.ChatAdapter()
    as_object = adapter.format(Chat, [], {"history": history, "question": "q2"})
    as_json = adapter.format(Chat, [], {"history": history.model_dump(mode="json"), "question": "q2"})
    assert as_json == as_object
    assert [message["role"] for message in as_object] == ["system", "user", "assistant", "user"]


def test_image_survives_a_trip_through_json() -> None:
    # Inputs cross Kafka as JSON: an Image dumps to its marked text, which still becomes a part.
    class Look(Signature):
        image: dspex.Image = InputField()
        caption: str = OutputField()

    wire = dspex.Image("https://e.com/a.png").model_dump(mode="json")
    messages = dspex.ChatAdapter().format(Look, [], {"image": wire})
    assert {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}} in messages[-1]["content"]
