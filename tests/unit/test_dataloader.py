from __future__ import annotations

import json
from pathlib import Path

import pytest

import dspex
from dspex.datasets import DataLoader
from dspex.errors import ConfigurationError


def test_a_csv_becomes_examples_with_numbers_typed_per_column(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text('question,answer,score,tag\n"what is 2+2, really?",4,0.5,\nwhat is 3+3,6,1,x\n')
    rows = DataLoader().from_csv(path, input_keys=("question",))
    assert [row.toDict() for row in rows] == [
        {"question": "what is 2+2, really?", "answer": 4, "score": 0.5, "tag": None},
        {"question": "what is 3+3", "answer": 6, "score": 1.0, "tag": "x"},
    ]
    assert rows[0].inputs().toDict() == {"question": "what is 2+2, really?"}
    only = DataLoader().from_csv(path, fields=["answer"])
    assert [row.answer for row in only] == [4, 6]


def test_json_arrays_and_json_lines_both_load(tmp_path: Path) -> None:
    records = [{"q": "a", "a": 1}, {"q": "b", "a": 2}]
    (tmp_path / "rows.json").write_text(json.dumps(records))
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for name in ("rows.json", "rows.jsonl"):
        rows = DataLoader().from_json(tmp_path / name, input_keys=("q",))
        assert [row.toDict() for row in rows] == records
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match=r"bad\.json: expected JSON objects"):
        DataLoader().from_json(tmp_path / "bad.json")


def test_a_field_missing_from_a_row_is_named_with_the_row(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"q": "a", "a": 1}\n{"q": "b"}\n')
    with pytest.raises(ConfigurationError, match=r"row 2 has no a"):
        DataLoader().from_json(tmp_path / "rows.jsonl", fields=["q", "a"])


def test_a_seeded_split_is_dspys_split() -> None:
    import dspy  # a dev dependency
    from dspy.datasets import DataLoader as DspyDataLoader

    ours = [dspex.Example(n=n) for n in range(20)]
    theirs = [dspy.Example(n=n) for n in range(20)]
    split = DataLoader().train_test_split(ours, train_size=0.6, test_size=5, random_state=7)
    expected = DspyDataLoader().train_test_split(theirs, train_size=0.6, test_size=5, random_state=7)
    assert [e.n for e in split["train"]] == [e.n for e in expected["train"]]
    assert [e.n for e in split["test"]] == [e.n for e in expected["test"]]
    assert (len(split["train"]), len(split["test"])) == (12, 5)


def test_bad_split_sizes_say_what_was_wrong() -> None:
    rows = [dspex.Example(n=n) for n in range(4)]
    with pytest.raises(ConfigurationError, match="train_size must be a fraction between 0 and 1"):
        DataLoader().train_test_split(rows, train_size=1.5)
    with pytest.raises(
        ConfigurationError, match=r"train_size \(3\) \+ test_size \(2\) exceed the 4 examples"
    ):
        DataLoader().train_test_split(rows, train_size=3, test_size=2)
