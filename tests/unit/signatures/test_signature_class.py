"""Class-form signatures, the immutable helpers, dump/from_dump and equality."""

# `from __future__ import annotations` on purpose: annotations arrive as strings and must resolve.
from __future__ import annotations

import enum
import json
from typing import ClassVar, Literal

import pydantic
import pytest

from dspex.errors import SecurityPolicyError, SignatureError
from dspex.signatures import (
    FieldSpec,
    InputField,
    OutputField,
    Signature,
    ensure_signature,
    make_signature,
    string_to_type,
    type_to_string,
)


class Answer(pydantic.BaseModel):
    value: int
    unit: str = "m"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class QA(Signature):
    """Answer the question.

    Use the context."""

    question: str = InputField(desc="the question")
    context: list[str] = InputField()
    answer: int = OutputField(desc="a number", ge=0)
    detail: Answer = OutputField()


def test_class_form_fields_types_and_instructions() -> None:
    assert QA.signature_string == "question, context -> answer, detail"
    assert QA.instructions == "Answer the question.\n\nUse the context."
    assert QA.input_fields["context"].annotation == list[str]
    assert QA.output_fields["detail"].annotation is Answer
    assert QA.output_fields["answer"] == FieldSpec("answer", "output", int, "a number", "Answer:", {"ge": 0})


def test_prefix_and_desc_defaults_follow_dspy() -> None:
    sig = make_signature("camelCaseText, text2number -> HTMLParser")
    prefixes = [spec.prefix for spec in sig.fields.values()]
    assert prefixes == ["Camel Case Text:", "Text 2 Number:", "HTML Parser:"]
    assert all(spec.desc == "" for spec in sig.fields.values())
    # DSPy's "${name}" placeholder means "no description" and is stored as such.
    cot = sig.prepend("reasoning", OutputField(desc="${reasoning}"))
    assert cot.output_fields["reasoning"].desc == ""
    assert cot.output_fields["reasoning"].prefix == "Reasoning:"


def test_class_without_docstring_gets_default_instructions() -> None:
    class NoDoc(Signature):
        question: str = InputField()
        answer: str = OutputField()

    assert NoDoc.instructions == "Given the fields `question`, produce the fields `answer`."


def test_unannotated_field_is_str_and_classvars_are_ignored() -> None:
    class Loose(Signature):
        note: ClassVar[str] = "not a field"
        question = InputField()
        answer: str = OutputField()

    assert Loose.input_fields["question"].annotation is str
    assert "note" not in Loose.fields


def test_subclass_adds_fields_after_the_bases() -> None:
    class More(QA):
        confidence: float = OutputField()

    assert list(More.output_fields) == ["answer", "detail", "confidence"]
    assert More.instructions == QA.instructions


def test_field_neither_input_nor_output_is_an_error() -> None:
    with pytest.raises(SignatureError, match="'answer' of signature Bad is neither an input nor an output"):

        class Bad(Signature):
            question: str = InputField()
            answer: str


@pytest.mark.parametrize("name", ["instructions", "completed", "dump"])
def test_reserved_names_are_rejected(name: str) -> None:
    with pytest.raises(SignatureError, match="reserved"):
        make_signature({"question": InputField(), name: OutputField()})


def test_deprecated_format_argument_warns_and_is_kept() -> None:
    with pytest.warns(DeprecationWarning, match="'format' argument"):
        field = OutputField(format=str)
    assert field.json_schema_extra["format"] is str


def test_unresolvable_annotation_is_a_signature_error() -> None:
    with pytest.raises(SignatureError, match="cannot resolve the field types"):

        class Dangling(Signature):
            answer: NotDefinedAnywhere = OutputField()  # type: ignore[name-defined]  # noqa: F821


def test_signature_instances_hold_values() -> None:
    with pytest.raises(SignatureError, match="missing value"):
        QA()
    record = QA(question="q", context=["c"], answer=1, detail=Answer(value=1))
    assert isinstance(record, QA) and record.answer == 1
    assert Signature("question -> answer") == make_signature("question -> answer")


def test_helpers_return_new_classes_and_leave_the_original_alone() -> None:
    before = QA.dump()
    changed = [
        QA.with_instructions("Be terse."),
        QA.append("confidence", OutputField(), float),
        QA.prepend("reasoning", OutputField()),
        QA.insert(1, "hint", InputField(desc="a hint")),
        QA.delete("context"),
        QA.with_updated_field("answer", desc="an integer", prefix="Result:"),
    ]
    assert QA.dump() == before
    assert all(sig is not QA and sig != QA for sig in changed)
    assert changed[0].instructions == "Be terse."
    assert list(changed[1].output_fields) == ["answer", "detail", "confidence"]
    assert list(changed[2].output_fields) == ["reasoning", "answer", "detail"]
    assert list(changed[3].input_fields) == ["question", "hint", "context"]
    assert list(changed[4].input_fields) == ["question"]
    assert changed[5].output_fields["answer"].desc == "an integer"
    assert changed[5].output_fields["answer"].prefix == "Result:"
    # Helpers keep the instructions text as it was (DSPy does the same).
    assert changed[2].instructions == QA.instructions


def test_insert_negative_index_and_out_of_range() -> None:
    sig = make_signature("a, b -> c")
    assert list(sig.insert(-1, "z", InputField()).input_fields) == ["a", "b", "z"]
    assert list(sig.insert(-2, "z", InputField()).input_fields) == ["a", "z", "b"]
    with pytest.raises(SignatureError, match="out of range"):
        sig.insert(5, "z", InputField())


def test_helper_errors() -> None:
    with pytest.raises(SignatureError, match="already has a field 'question'"):
        QA.append("question", InputField())
    assert QA.delete("nope") == QA  # as in DSPy: deleting an absent field changes nothing
    with pytest.raises(SignatureError, match="InputField"):
        QA.append("x", "not a field")  # type: ignore[arg-type]


def test_append_accepts_a_type_string() -> None:
    sig = QA.append("tags", OutputField(), "list[str]")
    assert sig.output_fields["tags"].annotation == list[str]


def test_dump_is_json_and_round_trips() -> None:
    data = QA.dump()
    assert json.loads(json.dumps(data)) == data
    assert data["fields"][2] == {
        "name": "answer", "role": "output", "type": "int", "desc": "a number", "prefix": "Answer:",
        "constraints": {"ge": 0},
    }  # fmt: skip
    assert data["fields"][3]["type"] == f"{__name__}:Answer"
    again = Signature.from_dump(data)
    assert again == QA and hash(again) == hash(QA)
    assert again.output_fields["detail"].annotation is Answer


def test_from_dump_respects_allow_modules_and_custom_types() -> None:
    data = QA.dump()
    with pytest.raises(SecurityPolicyError, match="outside the allowed modules"):
        Signature.from_dump(data, allow_modules=["myapp"])
    assert Signature.from_dump(data, allow_modules=[__name__]) == QA
    assert Signature.from_dump(data, allow_modules=[], custom_types={"Answer": Answer}) == QA


def test_from_dump_rejects_garbage() -> None:
    with pytest.raises(SignatureError, match="not a dumped signature"):
        Signature.from_dump({"fields": []})
    bad_role = {"instructions": "", "fields": [{"name": "a", "role": "middle", "type": "str"}]}
    with pytest.raises(SignatureError, match="role 'middle'"):
        Signature.from_dump(bad_role)


def test_equality_is_by_content() -> None:
    assert make_signature("question -> answer") == make_signature("question->answer")
    assert make_signature("question -> answer") != make_signature("question -> answer: int")
    assert make_signature("question -> answer", "x") != make_signature("question -> answer", "y")
    assert len({make_signature("a -> b"), make_signature("a -> b"), make_signature("a -> c")}) == 2


def test_make_signature_from_mapping_and_class() -> None:
    sig = make_signature({"question": (str, InputField()), "answer": (int, OutputField())}, "Do it.")
    assert sig.signature_string == "question -> answer" and sig.instructions == "Do it."
    assert make_signature(QA) is QA
    assert make_signature(QA, "New.").instructions == "New."
    assert ensure_signature("a -> b") == make_signature("a -> b")
    assert ensure_signature(QA) is QA


@pytest.mark.parametrize(
    "annotation",
    [str, int, list[str], dict[str, list[int]], tuple[int, ...], int | None, Literal["a", 1], Answer, Color],
)
def test_type_strings_round_trip(annotation: object) -> None:
    assert string_to_type(type_to_string(annotation)) == annotation


def test_type_to_string_refuses_unwritable_types() -> None:
    with pytest.raises(SignatureError, match="cannot write type"):
        type_to_string(type[int])
    loose = make_signature({"a": (type[int], InputField()), "b": OutputField()})
    assert loose.input_fields["a"].annotation == type[int]  # any type is allowed...
    with pytest.raises(SignatureError, match="cannot write type"):
        loose.dump()  # ...but only writable ones can be dumped
