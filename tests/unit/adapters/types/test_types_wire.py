"""Wire parity with DSPy 3.4.1: the messages and the parsing of special types equal real dspy's.

Each case builds the same signature with dspy's types and with ours, formats the same demos and
inputs with each adapter, and compares every message (roles, text, content parts).
"""

# No `from __future__ import annotations`: the signatures below are built inside functions from
# a module argument (dspy or dspex), so their annotations must be evaluated where they are written.
from types import ModuleType
from typing import Any

import pytest

import dspex
from dspex.experimental import Citations, Document

dspy = pytest.importorskip("dspy")
dspy_experimental = pytest.importorskip("dspy.experimental")

ADAPTERS = ["ChatAdapter", "JSONAdapter", "XMLAdapter"]


def _case(mod: ModuleType, document: type) -> tuple[type, list[dict[str, Any]], dict[str, Any]]:
    python_code = mod.Code["python"]

    class Ask(mod.Signature):  # type: ignore[name-defined,misc]
        """Answer about the pictures."""

        history: mod.History = mod.InputField()  # type: ignore[name-defined]
        question: str = mod.InputField(desc="the question")
        image: mod.Image = mod.InputField()  # type: ignore[name-defined]
        gallery: list[mod.Image] = mod.InputField()  # type: ignore[name-defined]
        clip: mod.Audio = mod.InputField()  # type: ignore[name-defined]
        attachment: mod.File = mod.InputField()  # type: ignore[name-defined]
        doc: document = mod.InputField()  # type: ignore[valid-type]
        answer: str = mod.OutputField()
        code: python_code = mod.OutputField()  # type: ignore[valid-type]

    history = mod.History(
        messages=[
            {"question": "first?", "answer": "one"},
            {"answer": "orphan answer"},
            {"question": "look", "image": mod.Image("https://e.com/h.png")},
        ]
    )
    inputs = {
        "history": history,
        "question": "what now?",
        "image": mod.Image("https://e.com/a.png"),
        "gallery": [mod.Image("https://e.com/b.png"), mod.Image("data:image/png;base64,AAAA")],
        "clip": mod.Audio(data="QUJD", audio_format="wav"),
        "attachment": mod.File.from_file_id("file-1", filename="n.txt"),
        "doc": document(data="Alpha", title="A"),
    }
    demo = {**inputs, "history": None, "answer": "demo answer", "code": "print(1)"}
    del demo["history"]
    return Ask, [demo], inputs


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_messages_equal_dspy(adapter: str) -> None:
    theirs = getattr(dspy, adapter)().format(*_case(dspy, dspy_experimental.Document))
    ours = getattr(dspex, adapter)().format(*_case(dspex, Document))
    assert ours == theirs


def test_plain_signature_messages_stay_text() -> None:
    messages = dspex.ChatAdapter().format("question -> answer", [], {"question": "hi"})
    assert all(isinstance(message["content"], str) for message in messages)


def test_reasoning_reads_as_str_in_prompts_like_dspy() -> None:
    def build(mod: ModuleType) -> type:
        class Think(mod.Signature):  # type: ignore[name-defined,misc]
            question: str = mod.InputField()
            reasoning: mod.Reasoning = mod.OutputField()  # type: ignore[name-defined]
            answer: int = mod.OutputField()

        return Think

    theirs = dspy.ChatAdapter().format(build(dspy), [], {"question": "q"})
    assert dspex.ChatAdapter().format(build(dspex), [], {"question": "q"}) == theirs


def test_native_citations_and_reasoning_are_read_from_the_response() -> None:
    class Cite(dspex.Signature):
        question: str = dspex.InputField()
        answer: str = dspex.OutputField()
        citations: Citations = dspex.OutputField()
        reasoning: dspex.Reasoning = dspex.OutputField(default="none given")

    item = {"cited_text": "sky", "document_index": 0, "start_char_index": 0, "end_char_index": 3}
    outputs = [{"text": "[[ ## answer ## ]]\nblue\n\n[[ ## completed ## ]]", "citations": [item]}]
    processed = Cite.delete("citations").delete("reasoning")
    [value] = dspex.ChatAdapter()._call_postprocess(processed, Cite, outputs, None, {})
    assert value["answer"] == "blue" and value["citations"][0].cited_text == "sky"
    assert value["reasoning"] == "none given"


def test_code_output_parses_a_fenced_answer() -> None:
    python_code = dspex.Code["python"]

    class Gen(dspex.Signature):
        task: str = dspex.InputField()
        code: python_code = dspex.OutputField()  # type: ignore[valid-type]

    text = "[[ ## code ## ]]\nHere it is:\n```python\nx = [1, 2]\n```\n\n[[ ## completed ## ]]"
    assert dspex.ChatAdapter().parse(Gen, text)["code"].code == "x = [1, 2]"
