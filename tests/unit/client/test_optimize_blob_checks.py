"""An optimize job's examples are checked for the blobs topic before anything is produced: a value
too large even for it, or a label too large to travel inline, is an InputError naming the set, the
example and the field; inputs over the threshold are planned as blobs (sent by submit_optimize)."""

from __future__ import annotations

import pytest

import dspex
from dspex.client._optimize import OptimizeRequest, _blob_plan, build_optimize_job
from dspex.client._submit import Policy
from dspex.errors import InputError
from dspex.streams.blobs import BlobSettings
from dspex.testing import arithmetic_dataset

SETTINGS = BlobSettings(threshold_bytes=1000, max_value_bytes=5000)


def examples_with(field: str, text: str, *, input_field: bool) -> list[dspex.Example]:
    rows = arithmetic_dataset(3, seed=4)
    inputs = ("question", field) if input_field else ("question",)
    return [
        row.copy(**{field: text if i == 1 else "short"}).with_inputs(*inputs) for i, row in enumerate(rows)
    ]


def request(train: list[dspex.Example], val: list[dspex.Example] | None = None) -> OptimizeRequest:
    return OptimizeRequest(dspex.Predict("question -> answer"), train, val, "exact_match:answer", "labeled")


def test_inputs_over_the_threshold_are_planned_as_blobs_and_stay_inline_until_submitted() -> None:
    train = examples_with("passage", "p" * 3000, input_field=True)
    _, job = build_optimize_job(request(train), Policy(), SETTINGS)
    assert job.trainset.examples is not None and job.trainset.examples[1]["passage"] == "p" * 3000
    plan = _blob_plan("trainset", job.trainset, SETTINGS)
    assert list(plan.fields) == [1] and list(plan.fields[1]) == ["passage"] and len(plan.values) == 1


@pytest.mark.parametrize(
    ("train_ok", "text", "input_field", "message"),
    [
        (True, "p" * 9000, True, r"valset: field 'passage' of example 1 is [\d,]+ bytes, over the limit"),
        (
            False,
            "p" * 3000,
            False,
            r"trainset: field 'passage' of example 1 is [\d,]+ bytes, and it is a label",
        ),
    ],
)
def test_values_that_cannot_be_sent_are_refused_naming_the_set(
    train_ok: bool, text: str, input_field: bool, message: str
) -> None:
    bad = examples_with("passage", text, input_field=input_field)
    fine = examples_with("passage", "short", input_field=input_field)
    train, val = (fine, bad) if train_ok else (bad, fine)
    with pytest.raises(InputError, match=message):
        build_optimize_job(request(train, val), Policy(), SETTINGS)


def test_a_run_s_trace_gets_the_example_s_value_back_for_a_blob_reference() -> None:
    import hashlib

    from pydantic_core import to_json

    from dspex.client._runs import prediction_of
    from dspex.schemas import ScoreRecord, TraceEntry
    from dspex.streams.blobs import BlobRef

    program = dspex.Predict("question, passage -> answer")
    example = dspex.Example(question="q", passage="p" * 3000, answer="a").with_inputs("question", "passage")
    sha = hashlib.sha256(to_json(example.to_dict()["passage"])).hexdigest()
    ref = BlobRef(sha256=sha, size=3002, chunks=1, partition=0, offset=7).wire()
    other = BlobRef(sha256="0" * 64, size=3002, chunks=1, partition=0, offset=8).wire()
    entry = TraceEntry(predictor="self", inputs={"question": "q", "passage": ref, "x": other}, outputs={})
    record = ScoreRecord(
        job_id="j", candidate_id="c", example_index=0, task_id="t", score=1.0, outputs={"answer": "a"},
        trace=[entry],
    )  # fmt: skip
    prediction = prediction_of(record, program, example)
    assert isinstance(prediction, dspex.Prediction)
    [step] = prediction.trace
    assert step.inputs == {"question": "q", "passage": "p" * 3000, "x": other}  # an unknown one is kept
    without = prediction_of(record, program)
    assert isinstance(without, dspex.Prediction) and without.trace[0].inputs["passage"] == ref
