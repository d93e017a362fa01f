"""Example and Prediction semantics, and Module structure (paths, copies, LMs, state)."""

from __future__ import annotations

import copy
import gc
from typing import Any

import pytest
from pydantic import BaseModel

import dspex
from dspex.adapters import JSONAdapter
from dspex.errors import ConfigurationError, InputError, ProgramLoadError
from dspex.lm import LM
from dspex.primitives import Example, Module, Prediction


def _lm(model: str = "openai/offline") -> LM:
    return LM(model, api_base="http://127.0.0.1:9/v1", cache=False)


# -- Example --------------------------------------------------------------------------------------


def test_example_fields_by_attribute_and_item() -> None:
    ex = Example(question="What is 2 + 3?", answer="5")
    assert ex.question == ex["question"] == "What is 2 + 3?"
    ex.answer = "6"
    ex["source"] = "unit"
    assert ex.answer == "6" and ex.get("source") == "unit" and ex.get("missing", "d") == "d"
    assert "source" in ex and "nope" not in ex
    assert len(ex) == 3 and list(ex) == ex.keys() == ["question", "answer", "source"]
    assert ex.values() == ["What is 2 + 3?", "6", "unit"]
    assert ex.items()[0] == ("question", "What is 2 + 3?")
    with pytest.raises(AttributeError, match="no field 'missing'"):
        _ = ex.missing
    with pytest.raises(AttributeError, match=r"set the field as ex\['keys'\]"):
        ex.keys = ["shadowed"]  # type: ignore[method-assign]
    ex["keys"] = "a field named keys"
    assert ex["keys"] == "a field named keys" and ex.keys()[-1] == "keys"
    with pytest.raises(KeyError):
        _ = ex["missing"]


def test_example_from_mapping_and_other_example_with_overrides() -> None:
    base = Example({"question": "q", "answer": "a"}, answer="b").with_inputs("question")
    again = Example(base, extra=1)
    assert again.to_dict() == {"question": "q", "answer": "b", "extra": 1}
    assert again.input_keys == frozenset({"question"})


def test_with_inputs_inputs_and_labels() -> None:
    ex = Example(question="q", context="c", answer="a")
    marked = ex.with_inputs("question", "context")
    assert ex.input_keys is None  # with_inputs returns a copy
    assert marked.inputs().to_dict() == {"question": "q", "context": "c"}
    assert marked.labels().to_dict() == {"answer": "a"}
    assert marked.inputs().input_keys == frozenset({"question", "context"})
    with pytest.raises(InputError, match="with_inputs"):
        ex.inputs()


def test_equality_and_hash_are_by_content() -> None:
    assert Example(a=1, b=[1, 2]) == Example(b=[1, 2], a=1)
    assert Example(a=1) != Example(a=2)
    assert Example(a=1) != {"a": 1}
    assert Example(a=1).with_inputs("a") == Example(a=1)  # DSPy compares fields only
    assert hash(Example(a=1, b="x")) == hash(Example(b="x", a=1))
    with pytest.raises(TypeError):
        hash(Example(a=[1]))  # a list field cannot be hashed


def test_copy_and_without_leave_the_original_alone() -> None:
    ex = Example(question="q", answer="a", source="s").with_inputs("question")
    changed = ex.copy(answer="b")
    smaller = ex.without("source", "answer")
    assert ex.to_dict() == {"question": "q", "answer": "a", "source": "s"}
    assert changed.answer == "b" and changed.input_keys == frozenset({"question"})
    assert smaller.to_dict() == {"question": "q"}
    with pytest.raises(KeyError):
        ex.without("nope")


class _Point(BaseModel):
    x: int
    y: int


def test_to_dict_converts_nested_examples_and_models() -> None:
    ex = Example(point=_Point(x=1, y=2), inner=Example(a=1), many=[Example(b=2), _Point(x=0, y=0)])
    assert ex.to_dict() == {
        "point": {"x": 1, "y": 2},
        "inner": {"a": 1},
        "many": [{"b": 2}, {"x": 0, "y": 0}],
    }


def test_repr_shows_fields_and_inputs() -> None:
    ex = Example(question="q", answer="a").with_inputs("question")
    assert repr(ex) == "Example({'question': 'q', 'answer': 'a'}) (input_keys={'question'})"
    assert repr(Prediction(answer="5")) == "Prediction(\n    answer='5'\n)"


def test_examples_survive_deepcopy() -> None:
    ex = Example(question="q", tags=["a"]).with_inputs("question")
    copied = copy.deepcopy(ex)
    copied.tags.append("b")
    assert ex.tags == ["a"] and copied.input_keys == frozenset({"question"})


def test_prediction_carries_usage_trace_and_adapter() -> None:
    pred = Prediction(answer="5", reasoning="2 + 3")
    assert pred.answer == "5" and pred.reasoning == "2 + 3"
    assert pred.usage.total_tokens == 0 and pred.trace == [] and pred.adapter is None
    assert pred == Example(answer="5", reasoning="2 + 3")
    with pytest.raises(AttributeError):
        pred.usage = None  # type: ignore[misc]
    assert Prediction(pred, extra=1).to_dict() == {"answer": "5", "reasoning": "2 + 3", "extra": 1}


# -- Module structure -----------------------------------------------------------------------------


class _Nested(Module):
    def __init__(self) -> None:
        self.generate = dspex.ChainOfThought("question -> answer")
        self.steps = [dspex.Predict("a -> b"), dspex.Predict("b -> c")]
        self.tools = {"search": dspex.Predict("query -> passages")}
        self.alias = self.steps[0]  # the same predictor twice: listed once, first path wins
        self.note = "not a module"


def test_named_predictors_walks_attributes_lists_and_dicts() -> None:
    program = _Nested()
    assert [path for path, _ in program.named_predictors()] == [
        "generate.predict",
        "steps[0]",
        "steps[1]",
        "tools['search']",
    ]
    assert program.predictors()[0] is program.generate.predict
    assert [path for path, _ in program.module_tree()] == [
        "self",
        "generate",
        "generate.predict",
        "steps[0]",
        "steps[1]",
        "tools['search']",
    ]
    assert [path for path, _ in program.named_children()] == [
        "generate",
        "steps[0]",
        "steps[1]",
        "tools['search']",
        "alias",
    ]


def test_the_module_walk_does_not_read_the_lm_history() -> None:
    # Every call walks the tree; a module's history holds up to max_history_size LM calls, so
    # reading it would make each call slower as the history grows.
    program = _Nested()

    class Exploding(list[Any]):
        def __iter__(self) -> Any:
            raise AssertionError("the module walk read the history")

    program.history = Exploding([{"messages": []}] * 10_000)
    assert [path for path, _ in program.named_children()] == [
        "generate",
        "steps[0]",
        "steps[1]",
        "tools['search']",
        "alias",
    ]
    assert len(program.module_tree()) == 6


def test_walking_the_module_tree_leaves_nothing_for_the_garbage_collector() -> None:
    # Every acall walks the tree, so a walk that builds reference cycles leaves garbage for the
    # collector on every call (see dspex._gc).
    program = _Nested()
    gc.collect()
    gc.disable()
    try:
        for _ in range(200):
            program.named_predictors()
        left_in_cycles = gc.collect()
    finally:
        gc.enable()
    # The recursive walk left seven objects per call; allow some garbage from other threads.
    assert left_in_cycles < 200


def test_a_bare_predictor_is_its_own_path() -> None:
    predict = dspex.Predict("question -> answer")
    assert predict.named_predictors() == [("self", predict)]
    assert predict.named_children() == []


def test_deepcopy_copies_state_and_shares_lms_and_adapters() -> None:
    lm, adapter = _lm(), JSONAdapter()
    program = _Nested()
    program.set_lm(lm)
    program.generate.predict.adapter = adapter
    program.steps[0].demos = [Example(a="1", b="2")]
    copied = program.deepcopy()
    assert copied.steps[0] is not program.steps[0] and copied.alias is copied.steps[0]
    assert copied.steps[0].demos == program.steps[0].demos
    assert copied.steps[0].demos[0] is not program.steps[0].demos[0]
    assert copied.get_lm() is lm and copied.generate.predict.adapter is adapter
    reset = program.reset_copy()
    assert reset.steps[0].demos == [] and program.steps[0].demos != []


def test_set_lm_and_get_lm() -> None:
    program = _Nested()
    assert program.get_lm() is None
    lm = _lm()
    program.set_lm(lm)
    assert all(p.lm is lm for p in program.predictors()) and program.get_lm() is lm
    program.steps[1].lm = _lm("openai/other")
    with pytest.raises(ConfigurationError, match="2 different LMs"):
        program.get_lm()


def test_dump_state_and_load_state_by_path() -> None:
    program = _Nested()
    program.steps[1].demos = [Example(b="x", c="y")]
    program.steps[1].config = {"temperature": 0.5}
    program.generate.predict.lm = _lm()
    state = program.dump_state()
    assert list(state) == ["generate.predict", "steps[0]", "steps[1]", "tools['search']"]
    assert state["generate.predict"]["lm"]["model"] == "openai/offline"
    fresh = _Nested().load_state(state, allow_unsafe_lm_state=True)  # keeps the LM's api_base
    assert fresh.steps[1].demos == [Example(b="x", c="y")] and fresh.steps[1].config == {"temperature": 0.5}
    assert fresh.generate.predict.lm is not None and fresh.generate.predict.lm.model == "openai/offline"
    assert fresh.dump_state() == state
    safe = _Nested().load_state(state)  # as DSPy: a state's endpoint is dropped unless trusted
    assert (
        safe.generate.predict.lm is not None and safe.generate.predict.lm.api_base != "http://127.0.0.1:9/v1"
    )
    with pytest.raises(ProgramLoadError, match=r"no state for predictor\(s\) \['generate.predict'"):
        _Nested().load_state({"nope": {}})


def test_a_module_without_forward_says_so() -> None:
    class Empty(Module):
        pass

    with pytest.raises(ConfigurationError, match="neither `aforward` nor `forward`"):
        Empty()()
