"""BAMLAdapter: its messages equal DSPy 3.4.1's ``BAMLAdapter().format(...)`` character for character,
and its answers parse as JSONAdapter's do.

Each parity case declares the same signature in dspex and in DSPy (from one field table) and
compares the full message lists for the same demos and inputs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any, Literal, Optional, Union

import pydantic
import pytest

import dspex
from dspex.adapters import BAMLAdapter, JSONAdapter
from dspex.adapters.baml_adapter import COMMENT_SYMBOL, INDENTATION
from dspex.errors import AdapterParseError, SignatureError
from dspex.signatures import Signature, make_signature


class Shade(enum.Enum):
    LIGHT = "light"
    DARK = "dark"


class Street(pydantic.BaseModel):
    """Where someone lives.

    Written as on an envelope."""

    line: str
    city: str = pydantic.Field(description="The city, in English")
    country: Literal["US", "CA"]


class Patient(pydantic.BaseModel):
    """
    A patient record
    """

    name: str = pydantic.Field(description="Full name")
    age: int
    street: Street | None = None
    tags: list[str] = []
    scores: dict[str, float] = {}
    shade: Shade = Shade.LIGHT
    smoker: Optional[bool] = None  # noqa: UP045 - typing.Optional is what users write too
    code: Literal[1, True, None, "x"] = 1
    nickname: str = pydantic.Field("", alias="nick")
    either: Union[int, str] = 0  # noqa: UP007 - typing.Union, not X | Y
    grid: list[list[int]] = []


class Ward(pydantic.BaseModel):
    beds: list[Patient] = pydantic.Field(description="Patients, one a bed")
    notes: str | None


class NoFields(pydantic.BaseModel):
    pass


class Loop(pydantic.BaseModel):
    name: str
    child: Loop | None = None


class TwoStreets(pydantic.BaseModel):
    home: Street
    work: list[Street]


# name -> (annotation, role, description); "" keeps DSPy's default description
Fields = dict[str, tuple[Any, str, str]]

CASES: dict[str, Fields] = {
    "plain": {"question": (str, "input", ""), "answer": (str, "output", "")},
    "scalars": {
        "question": (str, "input", "asked"),
        "count": (int, "output", "how many"),
        "ratio": (float, "output", ""),
        "ok": (bool, "output", ""),
    },
    "nested model": {"question": (str, "input", ""), "patient": (Patient, "output", "who")},
    "list of models": {"question": (str, "input", ""), "ward": (Ward, "output", "")},
    "top-level list of models": {"question": (str, "input", ""), "streets": (list[Street], "output", "")},
    "optional model": {"question": (str, "input", ""), "patient": (Optional[Patient], "output", "")},  # noqa: UP045
    "union of models": {"question": (str, "input", ""), "either": (Union[Street, NoFields], "output", "")},  # noqa: UP007
    "dict of models": {"question": (str, "input", ""), "by_id": (dict[str, Patient], "output", "")},
    "literal and enum": {
        "question": (str, "input", ""),
        "label": (Literal["yes", "no"], "output", ""),
        "shade": (Shade, "output", ""),
    },
    "lists and optionals": {
        "question": (str, "input", ""),
        "items": (list[str], "output", ""),
        "maybe": (list[int] | None, "output", ""),
        "pair": (tuple[int, str], "output", ""),
        "anything": (list, "output", ""),
    },
    "model input": {"patient": (Patient, "input", "the record"), "answer": (str, "output", "")},
}


def build(module: Any, fields: Fields) -> Any:
    """The signature of ``fields`` in ``module`` (dspex or dspy)."""
    spec = {}
    for name, (annotation, role, desc) in fields.items():
        kind = module.InputField if role == "input" else module.OutputField
        spec[name] = (annotation, kind(desc=desc) if desc else kind())
    return module.Signature(spec, "Answer the question.\n  Be brief.")


@pytest.fixture(scope="module")
def dspy() -> ModuleType:
    import dspy as dspy_module  # slow (about a second): once per module

    return dspy_module


def a_patient() -> Patient:
    return Patient(name="Ann", age=41, street=Street(line="1 Main St", city="Oslo", country="CA"), nick="A")


def inputs_for(fields: Fields) -> dict[str, Any]:
    return {
        name: a_patient() if spec[0] is Patient else "Why?"
        for name, spec in fields.items()
        if spec[1] == "input"
    }


def assert_same_messages(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert [m["role"] for m in ours] == [m["role"] for m in theirs]
    for index, (mine, dspys) in enumerate(zip(ours, theirs, strict=True)):
        assert mine["content"] == dspys["content"], f"message {index} ({mine['role']}) differs"


@pytest.mark.parametrize("case", list(CASES))
def test_messages_equal_dspys(dspy: ModuleType, case: str) -> None:
    from dspy.adapters.baml_adapter import BAMLAdapter as DspyBAMLAdapter

    fields = CASES[case]
    inputs = inputs_for(fields)
    demos = [dict(inputs)]  # inputs only: DSPy leaves such a demo out, and so must we
    ours = BAMLAdapter().format(build(dspex, fields), demos, inputs)
    theirs = DspyBAMLAdapter().format(build(dspy, fields), demos, inputs)
    assert_same_messages(ours, theirs)


def test_demo_answers_equal_dspys(dspy: ModuleType) -> None:
    from dspy.adapters.baml_adapter import BAMLAdapter as DspyBAMLAdapter

    fields = CASES["scalars"]
    demos = [{"question": "Q1", "count": 2, "ratio": 0.5, "ok": True}, {"question": "Q2", "count": 3}]
    ours = BAMLAdapter().format(build(dspex, fields), demos, {"question": "Q3"})
    theirs = DspyBAMLAdapter().format(build(dspy, fields), demos, {"question": "Q3"})
    assert_same_messages(ours, theirs)


def structure_of(annotation: Any) -> str:
    """The system message's line(s) describing an output ``answer`` of this type."""
    signature = make_signature(
        {"question": (str, dspex.InputField()), "answer": (annotation, dspex.OutputField())}
    )
    text = BAMLAdapter().format_field_structure(signature)
    return text.split("should be of type: ", 1)[1].rsplit("\n\n[[ ## completed", 1)[0]


def test_a_model_reads_as_a_commented_object() -> None:
    assert structure_of(Street) == "\n".join(
        [
            f"{COMMENT_SYMBOL} Where someone lives.",
            f"{COMMENT_SYMBOL} Written as on an envelope.",
            "{",
            f"{INDENTATION}line: string,",
            f"{INDENTATION}{COMMENT_SYMBOL} The city, in English",
            f"{INDENTATION}city: string,",
            f'{INDENTATION}country: "US" or "CA",',
            "}",
        ]
    )


def test_types_render_compactly() -> None:
    assert structure_of(str) == "string"
    assert structure_of(list[int] | None) == "int[] or null"
    assert structure_of(dict[str, bool]) == "dict[string, boolean]"
    assert structure_of(Literal["a", 2, False, None]) == '"a" or 2 or false or null'
    assert structure_of(Shade) == "Shade"
    assert structure_of(NoFields) == "{\n  # No fields defined\n}"


def test_a_recursive_model_is_refused() -> None:
    with pytest.raises(SignatureError, match="cannot handle recursive pydantic models"):
        structure_of(Loop)


def test_a_model_used_twice_but_not_recursively_is_rendered() -> None:
    # DSPy 3.4.1 refuses this one too (its set of seen models is shared between sibling fields);
    # only a model inside itself is recursive.
    text = structure_of(TwoStreets)
    assert text.count("city: string,") == 2
    assert "work: [\n" in text


def test_model_inputs_are_indented_json_by_alias() -> None:
    signature = build(dspex, CASES["model input"])
    content = BAMLAdapter().format(signature, [], {"patient": a_patient()})[-1]["content"]
    assert content.startswith("[[ ## patient ## ]]\n" + a_patient().model_dump_json(indent=2, by_alias=True))
    assert '"nick": "A"' in content


def test_parse_reads_json_like_json_adapter() -> None:
    signature = build(dspex, CASES["nested model"])
    completion = '{"patient": {"name": "Bo", "age": 3, "street": null}}'
    assert BAMLAdapter().parse(signature, completion) == JSONAdapter().parse(signature, completion)


def test_parse_errors_name_json_adapter_like_dspy() -> None:
    signature = make_signature("question -> answer, summary")
    with pytest.raises(AdapterParseError) as missing:
        BAMLAdapter().parse(signature, '{"answer": "a"}')
    assert missing.value.adapter_name == "JSONAdapter"
    assert "summary" in str(missing.value)


def test_a_badly_typed_value_names_baml_adapter() -> None:
    signature = build(dspex, CASES["nested model"])
    with pytest.raises(AdapterParseError) as bad:
        BAMLAdapter().parse(signature, '{"patient": {"name": "Bo", "age": "old"}}')
    assert bad.value.adapter_name == "BAMLAdapter"
    assert bad.value.field == "patient"


@dataclass
class JsonReplyLM:
    """An LM stand-in with ``acomplete``'s shape: records the request, answers one fixed text."""

    reply: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def acomplete(self, messages: list[dict[str, Any]], **request: Any) -> Any:
        self.requests.append({"messages": messages, **request})
        return SimpleNamespace(text=self.reply)


async def test_acall_result_asks_for_json_and_parses_the_answer() -> None:
    signature: type[Signature] = build(dspex, CASES["nested model"])
    lm: Any = JsonReplyLM('{"patient": {"name": "Cy", "age": 9}}')
    result = await BAMLAdapter().acall_result(lm, signature, [], {"question": "Who?"})
    assert result.outputs["patient"] == Patient(name="Cy", age=9)
    assert result.adapter == "baml"
    assert lm.requests[0]["response_format"] == {"type": "json_object"}
    assert lm.requests[0]["messages"] == BAMLAdapter().format(signature, [], {"question": "Who?"})


def test_exported_at_the_top_level() -> None:
    assert dspex.BAMLAdapter is BAMLAdapter
    assert repr(BAMLAdapter()) == "BAMLAdapter(structured_outputs=None)"
