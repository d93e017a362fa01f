"""Parity with DSPy 3.4.1: our ChatAdapter's messages equal dspy.ChatAdapter().format(...) exactly.

Each case builds the DSPy signature and ours from the same spec, then compares the full message
lists (roles and every character of content) for the same demos and inputs. DSPy comes from the
dev extra and is imported once for the module.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal, Optional

import pydantic
import pytest

from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.signatures import InputField, OutputField, Signature, make_signature


class Point(pydantic.BaseModel):
    x: int
    y: int = 0


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


@pytest.fixture(scope="module")
def dspy() -> ModuleType:
    import dspy as dspy_module  # slow (about a second): once per module

    return dspy_module


def cot(signature: type[Signature]) -> type[Signature]:
    """What dspy.ChainOfThought does to a signature: a `reasoning` output first, desc "${reasoning}"."""
    return signature.prepend("reasoning", OutputField(desc="${reasoning}"), str)


def assert_same_messages(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert [m["role"] for m in ours] == [m["role"] for m in theirs]
    for index, (mine, dspys) in enumerate(zip(ours, theirs, strict=True)):
        assert mine["content"] == dspys["content"], f"message {index} ({mine['role']}) differs"
    assert ours == theirs


# -- string-form signatures -------------------------------------------------------------------

QA_DEMOS = [
    {"question": "What is 1 + 1?", "answer": "2"},
    {"question": "Capital of France?", "answer": "Paris", "unrelated": "ignored"},
]
CONTEXT_DEMOS = [
    {"question": "How many?", "context": ["one apple", "two pears"], "answer": 3},
    {"question": "Only a question and an answer", "answer": 7},  # incomplete: no context
    {"question": "Only an input"},  # no output: DSPy leaves it out
    {"context": ["c"], "answer": None, "question": "None answer"},  # has an output key: incomplete
]
STRING_CASES: list[tuple[str, str | None, list[dict[str, Any]], dict[str, Any]]] = [
    ("question -> answer", None, [], {"question": "What is 2 + 3?"}),
    ("question -> answer", None, QA_DEMOS, {"question": "Multi-line\n  question «quoted»?"}),
    ("question, context: list[str] -> answer: int", None, [], {"question": "q", "context": ["a", "b\nc"]}),
    ("question, context: list[str] -> answer: int", None, CONTEXT_DEMOS, {"question": "q", "context": []}),
    ("question, context -> answer", "Answer from the context.", [], {"question": "q", "context": ["x", "y"]}),
    ("question, context -> answer", "", [], {"question": "q", "context": ["only one"]}),
    ("-> story", "Tell a story.", [], {}),
    (
        "text, meta: dict[str, int], flag: Optional[bool]"
        " -> label: Literal['pos', 'neg'], score: float, ok: bool",
        None,
        [{"text": "t", "meta": {"a": 1}, "flag": True, "label": "pos", "score": 0.5, "ok": False}],
        {"text": "ünïcode ✓", "meta": {"b": 2}, "flag": None},
    ),
]


@pytest.mark.parametrize(("spec", "instructions", "demos", "inputs"), STRING_CASES)
@pytest.mark.parametrize("transform", [lambda s: s, cot], ids=["predict", "chain_of_thought"])
def test_string_signatures_match_dspy(
    dspy: ModuleType,
    transform: Callable[[type[Signature]], type[Signature]],
    spec: str,
    instructions: str | None,
    demos: list[dict[str, Any]],
    inputs: dict[str, Any],
) -> None:
    ours = transform(make_signature(spec, instructions))
    theirs = dspy.Signature(spec, instructions)
    if transform is cot:
        theirs = dspy.ChainOfThought(theirs).predict.signature
    expected = dspy.ChatAdapter().format(theirs, demos, inputs)
    assert_same_messages(ChatAdapter().format(ours, demos, inputs), expected)


# -- class-form signatures --------------------------------------------------------------------


class OurQA(Signature):
    """Answer questions with short factoid answers.

    Think about the context first:
        - it may be wrong,
        - it may be empty.
    """

    question: str = InputField(desc="a trivia question")
    context: list[str] = InputField(desc="passages that may help")
    answer: str = OutputField(desc="often between 1 and 5 words")
    confidence: float = OutputField(desc="between 0 and 1", ge=0.0, le=1.0)


class OurTyped(Signature):
    """Locate and judge."""

    place: str = InputField()
    hint: Point = InputField(desc="a starting point")
    point: Point = OutputField(desc="where it is")
    mood: Mood = OutputField()
    tags: list[str] = OutputField(min_length=1, max_length=3)
    level: Literal[1, 2, 3] = OutputField()
    extra: Optional[dict[str, list[int]]] = OutputField()  # noqa: UP045 - matches DSPy's spelling


def dspy_classes(dspy: ModuleType) -> dict[str, Any]:
    class TheirQA(dspy.Signature):
        """Answer questions with short factoid answers.

        Think about the context first:
            - it may be wrong,
            - it may be empty.
        """

        question: str = dspy.InputField(desc="a trivia question")
        context: list[str] = dspy.InputField(desc="passages that may help")
        answer: str = dspy.OutputField(desc="often between 1 and 5 words")
        confidence: float = dspy.OutputField(desc="between 0 and 1", ge=0.0, le=1.0)

    class TheirTyped(dspy.Signature):
        """Locate and judge."""

        place: str = dspy.InputField()
        hint: Point = dspy.InputField(desc="a starting point")
        point: Point = dspy.OutputField(desc="where it is")
        mood: Mood = dspy.OutputField()
        tags: list[str] = dspy.OutputField(min_length=1, max_length=3)
        level: Literal[1, 2, 3] = dspy.OutputField()
        extra: Optional[dict[str, list[int]]] = dspy.OutputField()  # noqa: UP045

    return {"qa": TheirQA, "typed": TheirTyped}


QA_CLASS_DEMOS = [
    {"question": "Who wrote Hamlet?", "context": ["Shakespeare wrote plays."], "answer": "Shakespeare",
     "confidence": 0.9, "reasoning": "The context says so."},
    {"question": "Partial", "answer": "only answer"},
]  # fmt: skip
TYPED_DEMOS = [
    {"place": "Paris", "hint": Point(x=1), "point": Point(x=2, y=48), "mood": Mood.HAPPY, "tags": ["city"],
     "level": 2, "extra": {"k": [1, 2]}, "reasoning": "known"},
    {"place": "Nowhere", "point": {"x": 0, "y": 0}, "mood": "sad"},
]  # fmt: skip
CLASS_CASES = [
    ("qa", OurQA, [], {"question": "Tallest mountain?", "context": ["Everest is tall.", "K2 too."]}),
    ("qa", OurQA, QA_CLASS_DEMOS, {"question": "Tallest mountain?", "context": []}),
    ("typed", OurTyped, [], {"place": "Rome", "hint": Point(x=12, y=41)}),
    ("typed", OurTyped, TYPED_DEMOS, {"place": "Rome", "hint": {"x": 12}}),
]


@pytest.mark.parametrize(("key", "ours", "demos", "inputs"), CLASS_CASES)
@pytest.mark.parametrize("use_cot", [False, True], ids=["predict", "chain_of_thought"])
def test_class_signatures_match_dspy(
    dspy: ModuleType,
    use_cot: bool,
    key: str,
    ours: type[Signature],
    demos: list[dict[str, Any]],
    inputs: dict[str, Any],
) -> None:
    theirs = dspy_classes(dspy)[key]
    if use_cot:
        ours, theirs = cot(ours), dspy.ChainOfThought(theirs).predict.signature
    expected = dspy.ChatAdapter().format(theirs, demos, inputs)
    assert_same_messages(ChatAdapter().format(ours, demos, inputs), expected)


def test_chain_of_thought_field_matches_dspys(dspy: ModuleType) -> None:
    theirs = dspy.ChainOfThought("question -> answer").predict.signature.output_fields["reasoning"]
    ours = cot(make_signature("question -> answer")).output_fields["reasoning"]
    assert ours.prefix == theirs.json_schema_extra["prefix"]
    assert theirs.json_schema_extra["desc"] in (f"${{{ours.name}}}", ours.desc)


def test_dspy_examples_work_as_demos(dspy: ModuleType) -> None:
    demos = [dspy.Example(question="q1", answer="a1"), dspy.Example(question="q2", answer="a2")]
    sig_text = "question -> answer"
    expected = dspy.ChatAdapter().format(dspy.Signature(sig_text), demos, {"question": "q"})
    assert_same_messages(ChatAdapter().format(make_signature(sig_text), demos, {"question": "q"}), expected)


def test_json_adapter_prompt_matches_dspy_too(dspy: ModuleType) -> None:
    # Not promised (JSON parity is "roughly"), but held while it is true so a change is deliberate.
    spec = "question, context: list[str] -> answer: int"
    demos, inputs = CONTEXT_DEMOS[:2], {"question": "q", "context": ["a"]}
    expected = dspy.JSONAdapter().format(dspy.Signature(spec), demos, inputs)
    assert_same_messages(JSONAdapter().format(make_signature(spec), demos, inputs), expected)
