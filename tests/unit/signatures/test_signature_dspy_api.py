"""DSPy's Signature API on dspex signatures: field metadata, helpers, saved state, instances, scopes."""

import pickle
import types
from pathlib import Path

import cloudpickle
import pydantic
import pytest
from pydantic.fields import FieldInfo

from dspex.errors import SignatureError
from dspex.signatures import (
    InputField,
    OutputField,
    Signature,
    ensure_signature,
    infer_prefix,
    make_signature,
)


class Reply(pydantic.BaseModel):
    text: str


class Outer:
    class Inner(pydantic.BaseModel):
        score: float


class Review(Signature):
    """Review the draft."""

    draft: str = InputField(desc="the text to review")
    notes = InputField()
    verdict: bool = OutputField(prefix="Verdict:")
    score: int = OutputField(ge=0, le=5)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("question", "Question"),
        ("snake_case_name", "Snake Case Name"),
        ("camelCase", "Camel Case"),
        ("parseHTMLPage", "Parse HTML Page"),
        ("step2go", "Step 2 Go"),
        ("ABC", "ABC"),
    ],
)
def test_infer_prefix_splits_words_without_a_colon(name: str, words: str) -> None:
    assert infer_prefix(name) == words


def test_declarations_are_pydantic_fields_with_dspy_metadata() -> None:
    declared = OutputField(desc="a score", ge=0, max_length=3, default=1)
    assert isinstance(declared, FieldInfo)
    assert declared.default == 1
    assert declared.json_schema_extra == {
        "desc": "a score",
        "constraints": "greater than or equal to: 0, maximum length: 3",
        "__dspy_field_type": "output",
    }
    # pydantic's own description doubles as the description shown to the LM
    assert InputField(description="shown").json_schema_extra["desc"] == "shown"


def test_resolved_fields_carry_prefix_desc_and_role() -> None:
    draft, notes = Review.input_fields["draft"], Review.input_fields["notes"]
    assert isinstance(draft, FieldInfo)
    expected = {"__dspy_field_type": "input", "desc": "the text to review", "prefix": "Draft:"}
    assert draft.json_schema_extra == expected
    assert notes.annotation is str and notes.json_schema_extra["IS_TYPE_UNDEFINED"] is True
    assert notes.json_schema_extra["desc"] == "${notes}" and notes.desc == ""
    assert Review.output_fields["verdict"].prefix == "Verdict:"
    score = Review.output_fields["score"]
    assert score.role == "output" and score.constraints == {"ge": 0, "le": 5}
    assert score.constraint_text() == "greater than or equal to: 0, less than or equal to: 5"


def test_class_level_api() -> None:
    assert Review.signature == "draft, notes -> verdict, score"
    assert Review.instructions == "Review the draft."
    assert list(Review.fields) == ["draft", "notes", "verdict", "score"]
    text = repr(Review)
    assert text.startswith("Review(draft, notes -> verdict, score\n    instructions='Review the draft.'")
    assert "verdict = Field(" in text


def test_field_order_follows_the_class_body() -> None:
    class Mixed(Signature):
        text: str = InputField()
        label = OutputField()
        confident: bool = OutputField()

    assert list(Mixed.fields) == ["text", "label", "confident"]


def test_string_signatures_mark_untyped_inputs_only() -> None:
    sig = Signature("a, b: int -> c")
    assert sig.input_fields["a"].json_schema_extra["IS_TYPE_UNDEFINED"] is True
    assert sig.input_fields["b"].json_schema_extra["IS_TYPE_UNDEFINED"] is False
    assert "IS_TYPE_UNDEFINED" not in sig.output_fields["c"].json_schema_extra
    assert sig.instructions == "Given the fields `a`, `b`, produce the fields `c`."


def test_errors_are_value_and_type_errors() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        Signature("x -> x")
    with pytest.raises(ValueError):
        Signature("")
    with pytest.raises(TypeError):

        class NoRole(Signature):
            plain: str = pydantic.Field()

    with pytest.raises(TypeError):

        class Bare(Signature):
            plain: str


def test_instruction_helpers_return_new_classes() -> None:
    longer = Review.append_instructions("Be kind.").append_instructions("Be brief.")
    assert longer.instructions == "Review the draft.\n\nBe kind.\n\nBe brief."
    assert Review.with_instructions("Other.").instructions == "Other."
    assert Review.instructions == "Review the draft."


def test_with_updated_fields_merges_into_json_schema_extra() -> None:
    changed = Review.with_updated_fields("draft", int, prefix="Text:", desc="new")
    field = changed.input_fields["draft"]
    assert field.annotation is int and field.prefix == "Text:" and field.desc == "new"
    assert Review.input_fields["draft"].prefix == "Draft:"
    assert changed.output_fields["score"].json_schema_extra == Review.output_fields["score"].json_schema_extra


def test_insert_uses_the_fields_own_type_and_delete_ignores_absent_names() -> None:
    typed = OutputField()
    typed.annotation = float
    assert Review.append("extra", typed).output_fields["extra"].annotation is float
    prepended = Review.prepend("context", InputField(), int | None)
    assert prepended.input_fields["context"].annotation == int | None
    assert list(Review.delete("notes").input_fields) == ["draft"]
    assert Review.delete("missing") == Review


def test_equals_compares_instructions_and_field_metadata() -> None:
    pep604 = Signature("q: str | None -> a: int | str")
    assert pep604.equals(Signature("q: Optional[str] -> a: Union[int, str]"))
    assert not Signature("q -> a").equals(Signature("q -> b"))
    assert not Signature("q -> a", "One.").equals(Signature("q -> a", "Two."))
    assert not Signature("q -> a").equals("q -> a")


def test_dump_state_and_load_state_round_trip() -> None:
    state = Review.dump_state()
    assert state["instructions"] == "Review the draft."
    assert state["fields"][1] == {"prefix": "Notes:", "description": "${notes}"}
    other = Review.with_instructions("Changed.").with_updated_fields("draft", desc="changed")
    restored = other.load_state(state)
    assert restored.dump_state() == state
    assert other.instructions == "Changed." and other.input_fields["draft"].desc == "changed"
    with pytest.raises(SignatureError, match="not a saved signature state"):
        Review.load_state({"fields": []})


def test_instructions_can_be_assigned_on_a_class() -> None:
    sig = Signature("q -> a")
    sig.instructions = "Answer."
    assert sig.instructions == "Answer." and sig.__doc__ == "Answer."
    assert sig != Signature("q -> a")


def test_signature_instances_hold_values_and_defaults() -> None:
    class WithDefault(Signature):
        question: str = InputField()
        hint: str = InputField(default="none")
        answer: str = OutputField()

    record = WithDefault(question="q", answer="a")
    assert isinstance(record, WithDefault) and record.hint == "none"
    assert record == WithDefault(question="q", hint="none", answer="a")
    assert repr(record) == "WithDefault(question='q', hint='none', answer='a')"
    with pytest.raises(SignatureError, match="missing value"):
        WithDefault(question="q")


def test_type_names_resolve_from_the_callers_scope() -> None:
    class Local(pydantic.BaseModel):
        value: int

    alias = Outer.Inner  # noqa: F841 - named only inside the signature string below
    sig = Signature("a: Local, p: Path -> b: Reply, c: Outer.Inner, d: alias, e: list[Local]")
    assert sig.input_fields["a"].annotation is Local
    assert sig.input_fields["p"].annotation is Path
    assert sig.output_fields["b"].annotation is Reply
    assert sig.output_fields["c"].annotation is Outer.Inner
    assert sig.output_fields["d"].annotation is Outer.Inner
    assert sig.output_fields["e"].annotation == list[Local]
    assert ensure_signature("x: Local -> y").input_fields["x"].annotation is Local
    with pytest.raises(ValueError, match="Inner"):
        Signature("a -> b: Inner")
    not_a_type = 3
    with pytest.raises(ValueError, match="not_a_type"):
        make_signature(f"a -> b: {'not_a_type'}")
    assert not_a_type == 3


def test_parenthesised_unions_and_explicit_custom_types() -> None:
    sig = Signature("x: str | (int | float) | None -> y", custom_types={"Thing": Reply})
    assert set(sig.input_fields["x"].annotation.__args__) == {str, int, float, type(None)}
    made = make_signature("x: Thing -> y", None, "Named", {"Thing": Reply})
    assert made.__name__ == "Named" and made.input_fields["x"].annotation is Reply


def test_mapping_signatures_accept_fields_with_their_own_annotation() -> None:
    sig = Signature({"q": InputField(), "a": (int, OutputField())})
    assert sig.fields["q"].annotation is str and sig.fields["a"].annotation is int
    copy = Signature(Review.fields, Review.instructions)
    assert copy.equals(Review)
    with pytest.raises(ValueError, match="must be a type"):
        Signature({"q": (3, InputField()), "a": OutputField()})


def test_class_form_pep604_unions_stay_union_types() -> None:
    class Pep604(Signature):
        value: str | None = InputField()
        result: int | str = OutputField()

    assert isinstance(Pep604.input_fields["value"].annotation, types.UnionType)
    assert Pep604.equals(Pep604)


def test_signatures_survive_cloudpickle() -> None:
    class Local(Signature):
        """Do it."""

        context: list[str] = InputField()
        answer: str = OutputField(desc="the answer")

    for sig in (Local, Signature("a, b -> c", "Combine.")):
        loaded = pickle.loads(cloudpickle.dumps(sig))
        assert loaded.instructions == sig.instructions
        assert loaded.fields == sig.fields
        assert loaded.signature == sig.signature


def test_with_updated_field_keeps_the_fields_other_arguments() -> None:
    class WithDefault(Signature):
        question: str = InputField(default="why?")
        answer: int = OutputField(ge=0)

    changed = WithDefault.with_updated_field("question", prefix="Q:").with_updated_field("answer", desc="")
    assert changed.input_fields["question"].default == "why?"
    assert changed.input_fields["question"].prefix == "Q:"
    assert changed.output_fields["answer"].constraints == {"ge": 0}
    assert changed.output_fields["answer"].json_schema_extra["desc"] == "${answer}"
    stricter = WithDefault.with_updated_field("answer", constraints={"le": 9})
    assert stricter.output_fields["answer"].constraints == {"le": 9}
