"""Parity with DSPy 3.4.1 for the other adapters: JSON, XML and two-step prompts, character for character.

The cases are the ChatAdapter parity cases (string and class signatures, complete and incomplete
demos, typed inputs and outputs); each adapter formats them here and in DSPy and the messages must
be equal.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from test_chat_adapter_parity import CLASS_CASES, STRING_CASES, assert_same_messages, dspy_classes

from dspex.adapters import Adapter, JSONAdapter, TwoStepAdapter, XMLAdapter
from dspex.signatures import Signature, make_signature
from dspex.utils import DummyLM

ADAPTERS = ["json", "xml", "two_step"]


@pytest.fixture(scope="module")
def dspy() -> ModuleType:
    import dspy as dspy_module

    return dspy_module


def both(dspy: ModuleType, kind: str) -> tuple[Adapter, Any]:
    """Our adapter of this kind and DSPy's."""
    if kind == "json":
        return JSONAdapter(), dspy.JSONAdapter()
    if kind == "xml":
        return XMLAdapter(), dspy.XMLAdapter()
    return TwoStepAdapter(DummyLM([])), dspy.TwoStepAdapter(dspy.utils.DummyLM([]))


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize(("spec", "instructions", "demos", "inputs"), STRING_CASES)
def test_string_signatures_match_dspy(
    dspy: ModuleType,
    kind: str,
    spec: str,
    instructions: str | None,
    demos: list[dict[str, Any]],
    inputs: dict[str, Any],
) -> None:
    ours, theirs = both(dspy, kind)
    expected = theirs.format(dspy.Signature(spec, instructions), demos, inputs)
    assert_same_messages(ours.format(make_signature(spec, instructions), demos, inputs), expected)


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize(("key", "signature", "demos", "inputs"), CLASS_CASES)
def test_class_signatures_match_dspy(
    dspy: ModuleType,
    kind: str,
    key: str,
    signature: type[Signature],
    demos: list[dict[str, Any]],
    inputs: dict[str, Any],
) -> None:
    ours, theirs = both(dspy, kind)
    expected = theirs.format(dspy_classes(dspy)[key], demos, inputs)
    assert_same_messages(ours.format(signature, demos, inputs), expected)


@pytest.mark.parametrize("kind", ["json", "xml"])
@pytest.mark.parametrize(("key", "signature", "demos", "inputs"), CLASS_CASES)
def test_assistant_turns_match_dspy(
    dspy: ModuleType,
    kind: str,
    key: str,
    signature: type[Signature],
    demos: list[dict[str, Any]],
    inputs: dict[str, Any],
) -> None:
    ours, theirs = both(dspy, kind)
    for demo in demos:
        expected = theirs.format_assistant_message_content(dspy_classes(dspy)[key], demo, "missing")
        assert ours.format_assistant_message_content(signature, demo, "missing") == expected
