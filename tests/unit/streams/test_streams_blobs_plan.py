"""Which example values travel through the blobs topic, and what is refused before submitting."""

from __future__ import annotations

import hashlib

import pytest
from pydantic_core import to_json

from dspex.errors import ConfigurationError, InputError
from dspex.streams.blobs import BLOB_REF_KEY, BlobRef, BlobSettings, blob_ref, plan_blobs, refs_of, shrink

SETTINGS = BlobSettings(threshold_bytes=1000, max_value_bytes=5000, chunk_bytes=300)


def sha(value: object) -> str:
    return hashlib.sha256(to_json(value)).hexdigest()


def ref_for(value: object, partition: int = 0, offset: int = 0) -> BlobRef:
    size = len(to_json(value))
    return BlobRef(sha256=sha(value), size=size, chunks=1, partition=partition, offset=offset)


def test_only_input_values_over_the_threshold_become_blobs() -> None:
    long_text, history = "x" * 1200, {"messages": [{"question": "q", "answer": "a" * 1500}]}
    rows = [
        {"question": "short", "context": long_text, "answer": "4"},
        {"question": "short", "history": history, "answer": "5"},
        {"question": "x" * 998, "answer": "6"},  # 1000 bytes as JSON: not over the threshold
    ]
    plan = plan_blobs(rows, [["question", "context"], ["question", "history"], ["question"]], SETTINGS)
    assert plan.fields == {0: {"context": sha(long_text)}, 1: {"history": sha(history)}}
    assert plan.values[sha(long_text)] == to_json(long_text)

    refs = {sha(long_text): ref_for(long_text, 3, 17), sha(history): ref_for(history)}
    row = plan.apply(0, rows[0], refs)
    assert row["question"] == "short" and row["answer"] == "4"
    assert blob_ref(row["context"]) == refs[sha(long_text)]
    assert row["context"] == {BLOB_REF_KEY: refs[sha(long_text)].model_dump()}
    assert plan.apply(2, rows[2], refs) is rows[2]


def test_the_same_value_in_many_examples_is_one_blob() -> None:
    text = "y" * 2000
    rows = [{"passage": text} for _ in range(5)]
    plan = plan_blobs(rows, [["passage"]] * 5, SETTINGS)
    assert list(plan.values) == [sha(text)] and len(plan.fields) == 5


def test_a_value_over_the_limit_is_refused_naming_field_and_example() -> None:
    rows = [{"q": "fine"}, {"q": "fine", "image": "z" * 6000}]
    with pytest.raises(
        InputError, match=r"field 'image' of example 1 is 6,002 bytes, over the limit of 5,000"
    ):
        plan_blobs(rows, [["q"], ["q", "image"]], SETTINGS)


def test_a_long_label_is_refused_since_labels_travel_inline() -> None:
    with pytest.raises(InputError, match=r"field 'answer' of example 0 is .* a label, not an input"):
        plan_blobs([{"q": "a", "answer": "w" * 1500}], [["q"]], SETTINGS)


@pytest.mark.parametrize(
    "options",
    [
        {"threshold_bytes": 0},
        {"chunk_bytes": 64 * 1024 * 1024},
        {"threshold_bytes": 10, "max_value_bytes": 5},
    ],
)
def test_bad_settings_are_a_configuration_error(options: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError, match="BlobSettings"):
        BlobSettings(**options)


def test_references_are_recognised_and_malformed_ones_refused() -> None:
    assert blob_ref({"url": "x"}) is None and blob_ref("text") is None
    with pytest.raises(InputError, match="malformed blob reference"):
        blob_ref({BLOB_REF_KEY: {"sha256": "nothex"}})
    text = "v" * 1200
    assert refs_of({"a": ref_for(text).wire(), "b": "plain"}) == {sha(text): ref_for(text)}


def test_a_trace_gets_references_back_for_the_values_that_came_as_blobs() -> None:
    image, other = "i" * 3000, "o" * 3000
    refs = {sha(image): ref_for(image)}
    shrunk = shrink({"image": image, "other": other, "question": "q"}, refs)
    assert shrunk == {"image": ref_for(image).wire(), "other": other, "question": "q"}
    assert shrink({"image": image}, {}) == {"image": image}
