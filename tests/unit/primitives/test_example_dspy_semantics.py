"""Example behaves as DSPy 3.4.1's: the `base` keyword, hidden `dspy_*` fields, hashing, repr, toDict."""

from __future__ import annotations

import copy
import pickle
from collections import namedtuple

import pytest
from pydantic import BaseModel

from dspex.errors import InputError
from dspex.primitives import Example, Prediction


def test_base_keyword_takes_an_example_or_a_dict_and_keywords_win() -> None:
    marked = Example(city="Oslo", country="NO").with_inputs("city")
    from_example = Example(base=marked, country="Norway", pop=700_000)
    from_dict = Example(base={"city": "Bergen"}, pop=285_000)
    assert from_example.toDict() == {"city": "Oslo", "country": "Norway", "pop": 700_000}
    assert from_example.input_keys == {"city"}  # the marking travels with the base example
    assert from_dict.toDict() == {"city": "Bergen", "pop": 285_000} and from_dict.input_keys is None
    assert Example(base=None).toDict() == {} and Example({"x": 1}).x == 1  # positional still works


def test_dspy_prefixed_fields_are_stored_but_hidden_from_listings() -> None:
    row = Example(text="hi", label="greeting", dspy_uuid="u-1", dspy_split="train")
    assert len(row) == 2
    assert row.keys() == ["text", "label"]
    assert row.values() == ["hi", "greeting"]
    assert row.items() == [("text", "hi"), ("label", "greeting")]
    assert row.keys(include_dspy=True) == ["text", "label", "dspy_uuid", "dspy_split"]
    assert ("dspy_split", "train") in row.items(include_dspy=True)
    assert "u-1" in row.values(include_dspy=True)
    assert "dspy_uuid" in row and row.dspy_uuid == "u-1" and row.get("dspy_split") == "train"
    assert list(row) == ["text", "label", "dspy_uuid", "dspy_split"]  # iteration shows every name
    assert "dspy_uuid" not in repr(row) and row.toDict()["dspy_uuid"] == "u-1"
    assert row != Example(text="hi", label="greeting")  # hidden fields still count for equality


def test_repr_and_str_follow_dspy() -> None:
    row = Example(b=2, a=1, dspy_tag="x")
    assert repr(row) == str(row) == "Example({'b': 2, 'a': 1}) (input_keys=None)"
    assert repr(row.with_inputs("b", "a")) == "Example({'b': 2, 'a': 1}) (input_keys={'a', 'b'})"
    assert repr(row.with_inputs()) == "Example({'b': 2, 'a': 1}) (input_keys=set())"


def test_equal_examples_hash_alike_and_deduplicate_in_sets() -> None:
    first, second = Example(q="2+2", a="4"), Example(a="4", q="2+2")
    assert hash(first) == hash(second)
    assert len({first, second, Example(q="3+3", a="6")}) == 2
    assert hash(Prediction(q="2+2", a="4")) == hash(first)  # a prediction equals an example by fields
    with pytest.raises(TypeError):
        hash(Example(tags=["unhashable"]))


def test_inputs_need_a_marking_and_raise_a_value_error_without_one() -> None:
    row = Example(q="2+2", a="4")
    with pytest.raises(ValueError, match="with_inputs"):
        row.inputs()
    with pytest.raises(InputError):
        row.labels()


def test_inputs_keep_the_marking_and_labels_drop_it() -> None:
    row = Example(q="2+2", ctx="math", a="4").with_inputs("q", "ctx")
    assert row.inputs().toDict() == {"q": "2+2", "ctx": "math"}
    assert row.inputs().input_keys == {"q", "ctx"}
    assert row.labels().toDict() == {"a": "4"} and row.labels().input_keys is None
    assert row._input_keys == {"q", "ctx"}  # DSPy's tests read the private set directly


def test_copy_and_without_keep_the_marking_and_the_original() -> None:
    row = Example(q="2+2", a="4", src="web").with_inputs("q")
    changed = row.copy(a="four")
    trimmed = row.without("src")
    assert (changed.a, row.a) == ("four", "4")
    assert trimmed.keys() == ["q", "a"] and trimmed.input_keys == {"q"}
    with pytest.raises(AttributeError):
        _ = trimmed.src


class _Doc(BaseModel):
    title: str


class _DictLike:
    def toDict(self) -> dict[str, str]:
        return {"kind": "dict-like"}


_Pair = namedtuple("_Pair", "left right")


def test_to_dict_converts_nested_values_and_both_spellings_agree() -> None:
    row = Example(
        doc=_Doc(title="t"),
        inner=Example(x=1),
        many=[Example(y=2), {"z": Example(w=3)}],
        pair=(Example(v=4), "s"),
        named=_Pair(1, 2),
        other=_DictLike(),
    )
    expected = {
        "doc": {"title": "t"},
        "inner": {"x": 1},
        "many": [{"y": 2}, {"z": {"w": 3}}],
        "pair": ({"v": 4}, "s"),
        "named": _Pair(1, 2),
        "other": {"kind": "dict-like"},
    }
    assert row.toDict() == row.to_dict() == expected


def test_methods_cannot_be_shadowed_but_fields_of_that_name_can_be_set() -> None:
    row = Example(q="x")
    with pytest.raises(AttributeError, match="set the field as"):
        row.inputs = "oops"  # type: ignore[method-assign]
    row["inputs"] = "a field"
    assert row["inputs"] == "a field" and callable(row.inputs)


def test_examples_are_slotted_and_survive_pickle_and_copies() -> None:
    row = Example(q="x", tags=["a"]).with_inputs("q")
    assert not hasattr(row, "__dict__")  # two slots, no per-instance dict
    for clone in (pickle.loads(pickle.dumps(row)), copy.deepcopy(row), copy.copy(row)):
        assert clone == row and clone.input_keys == {"q"}
    copy.deepcopy(row).tags.append("b")
    assert row.tags == ["a"]


def test_an_empty_example_is_falsy_like_dspy() -> None:
    assert not Example() and not Example(dspy_only=1) and Example(a=0)


def test_a_base_that_is_not_a_record_is_refused_with_a_hint() -> None:
    with pytest.raises(InputError, match=r"a field named 'base'"):
        Example(**{"base": "a field value", "q": "x"})
    assert Example({"base": "kept"}).base == "kept"
