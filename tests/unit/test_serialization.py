"""Program JSON: round trips of the built-in modules, the same prompts after loading, bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.errors import ConfigurationError, ProgramLoadError, SecurityPolicyError
from dspex.lm import LM
from dspex.modules import ChainOfThought, Predict
from dspex.primitives import Example, Module
from dspex.primitives.saving import load, load_program
from dspex.serialization import FORMAT_VERSION, candidate_id, dump_program


def _lm(**kwargs: Any) -> LM:
    return LM("openai/offline", api_base="http://127.0.0.1:9/v1", cache=False, **kwargs)


class QA(dspex.Signature):
    """Answer the question with a number."""

    question: str = dspex.InputField(desc="an arithmetic question")
    answer: int = dspex.OutputField(desc="a number", ge=0)


def _optimized_predict() -> Predict:
    demos = [Example(question="1 + 1", answer=2).with_inputs("question"), Example(question="2 + 2", answer=4)]
    return Predict(
        dspex.make_signature(QA).with_instructions("Think step by step, then double-check."),
        lm=_lm(api_key="sk-never-saved", temperature=0.5, top_p=0.9),
        adapter=JSONAdapter(),
        demos=demos,
        max_tokens=64,
    )


def _messages(predictor: Predict, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    adapter = predictor.adapter or ChatAdapter()
    demos = [dict(demo.items()) for demo in predictor.demos]
    return adapter.format(predictor.signature, demos, inputs)


def test_predict_round_trip_through_a_file(tmp_path: Path) -> None:
    original = _optimized_predict()
    path = tmp_path / "qa.json"
    original.save(path)
    text = path.read_text()
    assert "sk-never-saved" not in text
    loaded = dspex.load(path)
    assert isinstance(loaded, Predict)
    assert loaded.signature == original.signature and loaded.signature.instructions.startswith("Think")
    assert loaded.demos == original.demos and loaded.config == {"max_tokens": 64}
    assert isinstance(loaded.adapter, JSONAdapter)
    assert loaded.lm is not None and loaded.lm.settings() == original.lm.settings()  # type: ignore[union-attr]
    assert loaded.dump() == original.dump()
    assert _messages(loaded, {"question": "3 + 4"}) == _messages(original, {"question": "3 + 4"})


def test_the_dump_is_self_describing() -> None:
    data = dump_program(_optimized_predict())
    assert data["dspex_program"] == FORMAT_VERSION and data["type"] == "dspex.Predict"
    fields = {field["name"]: field for field in data["signature"]["fields"]}
    assert fields["answer"] == {
        "name": "answer", "role": "output", "type": "int", "desc": "a number", "prefix": "Answer:",
        "constraints": {"ge": 0},
    }  # fmt: skip
    assert data["demos"] == [{"question": "1 + 1", "answer": 2}, {"question": "2 + 2", "answer": 4}]
    assert data["lm"]["model"] == "openai/offline" and data["lm"]["temperature"] == 0.5
    assert data["adapter"] == "json" and data["config"] == {"max_tokens": 64} and data["children"] == {}
    assert json.loads(json.dumps(data)) == data


def test_chain_of_thought_round_trip_keeps_an_edited_reasoning_field() -> None:
    original = ChainOfThought("question, context: list[str] -> answer", temperature=0.2)
    original.predict.signature = original.signature.with_updated_field("reasoning", desc="think aloud")
    original.predict.demos = [Example(question="q", context=["c"], reasoning="r", answer="a")]
    data = original.dump()
    assert data["type"] == "dspex.ChainOfThought" and list(data["children"]) == ["predict"]
    loaded = load_program(data)
    assert isinstance(loaded, ChainOfThought)
    assert loaded.signature == original.signature
    assert loaded.signature.output_fields["reasoning"].desc == "think aloud"
    assert loaded.predict.config == {"temperature": 0.2} and loaded.dump() == data
    inputs = {"question": "why?", "context": ["because"]}
    assert _messages(loaded.predict, inputs) == _messages(original.predict, inputs)


def test_a_program_of_standard_modules_needs_no_user_code() -> None:
    program = Module()
    program.first = ChainOfThought("question -> answer")  # type: ignore[attr-defined]
    program.second = Predict("question, answer -> verdict: bool")  # type: ignore[attr-defined]
    loaded = load_program(program.dump())
    assert type(loaded) is Module
    assert [path for path, _ in loaded.named_predictors()] == ["first.predict", "second"]
    assert loaded.dump() == program.dump()


def test_predictors_with_the_same_lm_settings_share_one_lm_after_loading() -> None:
    program = Module()
    program.a = Predict("q -> a", lm=_lm())  # type: ignore[attr-defined]
    program.b = Predict("q -> a", lm=_lm())  # type: ignore[attr-defined]
    loaded = load_program(program.dump())
    assert loaded.get_lm() is not None


def test_candidate_id_is_the_content_id_of_the_dump() -> None:
    predict = _optimized_predict()
    assert candidate_id(predict) == candidate_id(dump_program(predict)) == candidate_id(predict.deepcopy())
    assert len(candidate_id(predict)) == 32
    changed = predict.deepcopy()
    changed.demos = changed.demos[:1]
    assert candidate_id(changed) != candidate_id(predict)


def test_values_that_are_not_json_cannot_be_saved() -> None:
    predict = Predict("q -> a", stop=object())
    with pytest.raises(ConfigurationError, match=r"Predict\('q -> a'\) cannot be saved: .*non-JSON value"):
        predict.dump()


# -- bad files ------------------------------------------------------------------------------------


def test_corrupt_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"dspex_program": 1, "type": ')
    with pytest.raises(ProgramLoadError, match=r"broken\.json: corrupt program file, not valid JSON"):
        load(path)


def test_a_newer_format_says_so(tmp_path: Path) -> None:
    path = tmp_path / "future.json"
    path.write_text(json.dumps({**dump_program(Predict("q -> a")), "dspex_program": FORMAT_VERSION + 1}))
    with pytest.raises(ProgramLoadError, match=r"future\.json: written by a newer dspex \(program format 2"):
        load(path)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"type": "dspex.Predict"}, "not a dspex program"),
        ({"dspex_program": "one", "type": "dspex.Predict"}, "format version 'one' is not valid"),
        ({"dspex_program": 1}, "'type' is missing"),
        ({"dspex_program": 1, "type": "dspex.Predict", "children": {}}, "signature"),
        ({"dspex_program": 1, "type": "NoSuchThing", "children": {}}, "unknown module type 'NoSuchThing'"),
        ({"dspex_program": 1, "type": "json:JSONDecoder", "children": {}}, "not a dspex Module class"),
        ({"dspex_program": 1, "type": "no_such_pkg.mod:Prog", "children": {}}, "cannot import"),
    ],
)
def test_malformed_programs_say_what_is_wrong(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ProgramLoadError, match=problem):
        load_program(data)


def test_a_corrupt_signature_inside_a_program_names_where(tmp_path: Path) -> None:
    data = dump_program(ChainOfThought("question -> answer"))
    data["children"]["predict"]["signature"]["fields"][0]["type"] = "list[???"
    with pytest.raises(ProgramLoadError, match=r"program: at program"):
        load_program(data)


def test_allow_modules_restricts_custom_code_but_not_dspex() -> None:
    data = {"dspex_program": 1, "type": "json:JSONDecoder", "children": {}}
    with pytest.raises(
        SecurityPolicyError, match=r"json:JSONDecoder, outside the allowed modules \['myapp'\]"
    ):
        load_program(data, allow_modules=["myapp"])
    assert isinstance(load_program(dump_program(Predict("q -> a")), allow_modules=[]), Predict)
