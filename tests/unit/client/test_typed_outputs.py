"""Predictions read back from score records get their typed fields (numbers, lists, enums, dates,
pydantic models, Image, History...) back as those types, as local Evaluate gives them."""

from __future__ import annotations

import datetime
import enum
import json
from typing import Any, Literal

import pydantic
from pydantic_core import to_jsonable_python

import dspex
from dspex.client._runs import prediction_of
from dspex.client.results import coerce_outputs, evaluation_result, output_types
from dspex.modules.react_v2 import ReActV2
from dspex.schemas import ScoreRecord


class Point(pydantic.BaseModel):
    x: int
    y: int


class Locate(dspex.Signature):
    """Find the point."""

    question: str = dspex.InputField()
    point: Point = dspex.OutputField()
    maybe: Point | None = dspex.OutputField()
    note: str = dspex.OutputField()


def _history() -> dspex.History:
    return dspex.History(messages=[{"question": "2+2?", "answer": "4"}])


def _wire(outputs: dict[str, Any]) -> dict[str, Any]:
    """The outputs as they travel: JSON, read back as plain values."""
    return json.loads(json.dumps(outputs, default=lambda value: value.model_dump(mode="json")))


def _record(outputs: dict[str, Any]) -> ScoreRecord:
    return ScoreRecord(job_id="j", candidate_id="c", example_index=0, task_id="t", score=1.0, outputs=outputs)


def test_a_react_v2_history_comes_back_as_a_history() -> None:
    agent = ReActV2("question -> answer", tools=[])
    outputs = _wire({"answer": "4", "history": _history(), "termination_reason": "submit"})
    prediction = prediction_of(_record(outputs), agent)
    assert isinstance(prediction, dspex.Prediction)
    assert isinstance(prediction.history, dspex.History)
    assert prediction.history.messages == _history().messages
    assert prediction.answer == "4" and prediction.termination_reason == "submit"


def test_evaluation_results_use_the_candidates_field_types() -> None:
    program = dspex.Predict(Locate)
    outputs = _wire({"point": Point(x=1, y=2), "maybe": None, "note": "n"})
    result = evaluation_result(
        "c", [_record(outputs)], None, total=1, metric="m", field_types=output_types(program)
    )
    prediction = result.records[0].prediction
    assert prediction is not None and prediction.point == Point(x=1, y=2)
    assert prediction.maybe is None and prediction.note == "n"
    untyped = evaluation_result("c", [_record(outputs)], None, total=1, metric="m").records[0].prediction
    assert untyped is not None and untyped.point == {"x": 1, "y": 2}  # without types: as it came


def test_output_types_name_every_typed_field_but_text() -> None:
    assert output_types(dspex.Predict(Locate)) == {"point": Point, "maybe": Point | None}
    assert output_types(dspex.Predict("question -> answer")) == {}
    assert output_types(dspex.Predict("question -> count: int, tags: list[str]")) == {
        "count": int, "tags": list[str]
    }  # fmt: skip


class Shape(enum.Enum):
    CIRCLE = "circle"
    SQUARE = "square"


class Everything(dspex.Signature):
    """Every kind of output."""

    question: str = dspex.InputField()
    count: int = dspex.OutputField()
    ratio: float = dspex.OutputField()
    tags: list[str] = dspex.OutputField()
    pair: tuple[int, str] = dspex.OutputField()
    shape: Shape = dspex.OutputField()
    day: datetime.date = dspex.OutputField()
    kind: Literal["a", "b"] = dspex.OutputField()
    point: Point = dspex.OutputField()
    picture: dspex.Image = dspex.OutputField()
    chat: dspex.History = dspex.OutputField()


def test_outputs_come_back_as_their_declared_types_as_local_evaluate_gives_them() -> None:
    local = {
        "count": 3, "ratio": 2.0, "tags": ["x", "y"], "pair": (1, "a"), "shape": Shape.SQUARE,
        "day": datetime.date(2026, 12, 5), "kind": "b", "point": Point(x=1, y=2),
        "picture": dspex.Image("https://example.com/cat.png"), "chat": _history(),
    }  # fmt: skip
    wire = json.loads(json.dumps(to_jsonable_python(local)))  # what a prediction record carries
    assert wire["pair"] == [1, "a"] and wire["shape"] == "square" and isinstance(wire["picture"], str)
    typed = coerce_outputs(wire, output_types(dspex.Predict(Everything)))
    assert typed == local
    assert [type(typed[name]) for name in local] == [type(value) for value in local.values()]


def test_a_value_that_does_not_validate_is_kept_as_it_came() -> None:
    coerced = coerce_outputs({"point": {"x": "not a number"}, "note": "n"}, {"point": Point})
    assert coerced == {"point": {"x": "not a number"}, "note": "n"}
