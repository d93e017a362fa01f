"""Reading rules of every message model: round trips, strict types, versions, unknown fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from dspex.errors import SchemaError
from dspex.schemas import (
    MESSAGE_MODELS,
    TOPIC_VALUE_MODELS,
    Cancel,
    CandidateAggregate,
    EvalJob,
    ExampleSet,
    JobMessage,
    JobStatus,
    LMSpec,
    MetricSpec,
    OptimizeStatus,
    PredictionRecord,
    ScoreRecord,
    StatusMessage,
    Task,
    UsageRecord,
    decode,
    encode,
    schema_error_reason,
)


def _wire(model: BaseModel, **changes: Any) -> bytes:
    data = json.loads(encode(model))
    data.update(changes)
    return json.dumps(data).encode()


def test_every_message_model_has_a_sample(samples: list[BaseModel]) -> None:
    assert {type(item) for item in samples} == set(MESSAGE_MODELS)


def test_round_trip_through_bytes(sample: BaseModel) -> None:
    assert decode(encode(sample), type(sample)) == sample


def test_round_trip_through_json_mode_dump(sample: BaseModel) -> None:
    assert type(sample).model_validate(sample.model_dump(mode="json")) == sample


def test_round_trip_through_the_topic_value_type(sample: BaseModel) -> None:
    roles = [role for role, value in TOPIC_VALUE_MODELS.items() if _carries(value, type(sample))]
    assert roles, f"{type(sample).__name__} is on no topic"
    for role in roles:
        assert decode(encode(sample), TOPIC_VALUE_MODELS[role]) == sample


def _carries(value_type: Any, model: type[BaseModel]) -> bool:
    if value_type is model:
        return True
    return value_type in (JobMessage, StatusMessage) and model.__name__ in repr(value_type)


def test_encoding_is_compact_utf8_json(sample: BaseModel) -> None:
    data = encode(sample)
    parsed = json.loads(data.decode("utf-8"))
    assert data == json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert parsed["schema_version"] == type(sample).SCHEMA_VERSION  # type: ignore[attr-defined]


def test_union_picks_the_model_by_kind(samples: list[BaseModel]) -> None:
    for item in samples:
        if isinstance(item, EvalJob | Cancel | JobStatus | OptimizeStatus):
            union = StatusMessage if isinstance(item, JobStatus | OptimizeStatus) else JobMessage
            assert type(decode(encode(item), union)) is type(item)


@pytest.mark.parametrize(
    ("field", "value", "expected_in_message"),
    [
        ("example_index", "3", "example_index"),
        ("example_index", 3.0, "example_index"),
        ("example_index", True, "example_index"),
        ("job_id", 17, "job_id"),
        ("input_keys", "question", "input_keys"),
        ("example", ["question"], "example"),
        ("attempt", None, "attempt"),
    ],
)
def test_wrong_types_are_rejected(field: str, value: Any, expected_in_message: str) -> None:
    task = Task.build(job_id="j", candidate_id="c", example_index=3, example={"q": 1}, input_keys=["q"])
    with pytest.raises(SchemaError) as caught:
        decode(_wire(task, **{field: value}), Task)
    message = str(caught.value)
    assert "Task" in message and expected_in_message in message
    assert caught.value.model == "Task"
    assert schema_error_reason(caught.value) == "schema_invalid"


def test_wrong_type_message_says_what_was_wrong() -> None:
    task = Task.build(job_id="j", candidate_id="c", example_index=3, example={"q": 1}, input_keys=["q"])
    with pytest.raises(SchemaError, match=r"example_index: Input should be a valid integer \(got str '3'\)"):
        decode(_wire(task, example_index="3"), Task)


def test_nested_wrong_type_names_the_path(samples: list[BaseModel]) -> None:
    job = next(item for item in samples if isinstance(item, EvalJob))
    data = json.loads(encode(job))
    data["lm"]["max_tokens"] = "1000"
    with pytest.raises(SchemaError, match=r"eval\.lm\.max_tokens"):
        decode(json.dumps(data).encode(), JobMessage)


def test_int_is_accepted_where_a_float_is_expected() -> None:
    score = ScoreRecord(job_id="j", candidate_id="c", example_index=0, task_id="t", score=1.0)
    decoded = decode(_wire(score, score=1, latency_s=2), ScoreRecord)
    assert decoded.score == 1.0 and isinstance(decoded.score, float)
    assert decoded.latency_s == 2.0


def test_float_score_as_string_is_rejected() -> None:
    score = ScoreRecord(job_id="j", candidate_id="c", example_index=0, task_id="t", score=1.0)
    with pytest.raises(SchemaError, match="score"):
        decode(_wire(score, score="1.0"), ScoreRecord)


def test_missing_required_field_is_named() -> None:
    cancel = Cancel(job_id="j")
    data = json.loads(encode(cancel))
    del data["job_id"]
    with pytest.raises(SchemaError, match=r"job_id: Field required"):
        decode(json.dumps(data).encode(), Cancel)


@pytest.mark.parametrize("version", ["2.0", "0.9", "10.1"])
def test_unknown_major_version_is_rejected_with_a_clear_message(sample: BaseModel, version: str) -> None:
    name = type(sample).__name__
    with pytest.raises(SchemaError) as caught:
        decode(_wire(sample, schema_version=version), type(sample))
    message = str(caught.value)
    assert f"{name} with schema_version '{version}' is not supported" in message
    assert f"{name} 1.x" in message
    assert schema_error_reason(caught.value) == "unsupported_version"


def test_unknown_major_through_a_union_names_the_member_model() -> None:
    with pytest.raises(SchemaError, match=r"Cancel with schema_version '2\.0' is not supported"):
        decode(_wire(Cancel(job_id="j"), schema_version="2.0", job_id=5), JobMessage)


@pytest.mark.parametrize("version", ["1", "v1.0", "1.0.0", "", "1.x"])
def test_malformed_version_is_rejected(version: str) -> None:
    with pytest.raises(SchemaError, match="is not supported"):
        decode(_wire(Cancel(job_id="j"), schema_version=version), Cancel)


def test_version_as_a_number_is_rejected() -> None:
    with pytest.raises(SchemaError, match=r"schema_version 1\.0 is not supported"):
        decode(_wire(Cancel(job_id="j"), schema_version=1.0), Cancel)


def test_missing_version_on_the_wire_is_rejected_but_python_construction_fills_it() -> None:
    data = json.loads(encode(Cancel(job_id="j")))
    del data["schema_version"]
    with pytest.raises(SchemaError, match="Cancel has no schema_version"):
        decode(json.dumps(data).encode(), Cancel)
    assert Cancel(job_id="j").schema_version == Cancel.SCHEMA_VERSION == "1.1"
    assert Cancel.model_validate({"job_id": "j"}).schema_version == "1.1"


def test_constructing_an_unknown_major_in_python_fails() -> None:
    with pytest.raises(ValidationError, match="not supported"):
        Cancel(job_id="j", schema_version="2.0")


def test_newer_minor_version_is_accepted_and_kept(sample: BaseModel) -> None:
    decoded = decode(_wire(sample, schema_version="1.42"), type(sample))
    assert decoded.schema_version == "1.42"  # type: ignore[attr-defined]
    assert decoded.model_dump(exclude={"schema_version"}) == sample.model_dump(exclude={"schema_version"})


def test_unknown_fields_are_ignored_at_top_level_and_nested(samples: list[BaseModel]) -> None:
    job = next(item for item in samples if isinstance(item, EvalJob))
    data = json.loads(encode(job))
    data["added_in_1_1"] = {"anything": [1, 2]}
    data["metric"]["new_option"] = True
    data["lm"]["api_key"] = "sk-must-not-survive"
    decoded = decode(json.dumps(data).encode(), EvalJob)
    assert decoded == job
    assert "sk-must-not-survive" not in encode(decoded).decode()


def test_models_are_frozen(sample: BaseModel) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        sample.schema_version = "1.1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("data", [b"\xff\xfe", b"not json", b"", b"{", "{\u0000"])
def test_undecodable_bytes_raise_schema_error(data: bytes | str) -> None:
    with pytest.raises(SchemaError, match="Task is invalid: not valid UTF-8 JSON") as caught:
        decode(data, Task)
    assert schema_error_reason(caught.value) == "undecodable"


def test_json_that_is_not_an_object_is_schema_invalid() -> None:
    with pytest.raises(SchemaError) as caught:
        decode(b"[1, 2]", Task)
    assert schema_error_reason(caught.value) == "schema_invalid"


def test_a_tombstone_raises_schema_error() -> None:
    with pytest.raises(SchemaError, match="no value") as caught:
        decode(None, Task)
    assert schema_error_reason(caught.value) == "undecodable"


def test_unknown_kind_in_a_union_is_rejected() -> None:
    with pytest.raises(SchemaError, match=r"JobMessage is invalid: .*'eval', 'optimize', 'cancel'"):
        decode(b'{"kind": "retrain", "schema_version": "1.0", "job_id": "j"}', JobMessage)


def test_nan_scores_are_refused_when_written() -> None:
    with pytest.raises(ValidationError, match="finite"):
        ScoreRecord(job_id="j", candidate_id="c", example_index=0, task_id="t", score=float("nan"))


def test_lm_spec_refuses_credentials_in_extra() -> None:
    with pytest.raises(ValidationError, match=r"must not carry credentials \(Authorization, api_key\)"):
        LMSpec(model="openai/x", extra={"api_key": "sk-1", "Authorization": "Bearer x", "top_p": 1.0})
    assert LMSpec(model="openai/x", extra={"top_p": 1.0}).extra == {"top_p": 1.0}


def test_judge_metric_needs_a_signature() -> None:
    with pytest.raises(ValidationError, match="judge_signature"):
        MetricSpec(name="judge", kind="judge")


def test_example_set_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ExampleSet(input_keys=["q"])
    with pytest.raises(ValidationError, match="exactly one"):
        ExampleSet(examples=[], uri="x.jsonl", input_keys=["q"])


def test_prediction_needs_outputs_or_error() -> None:
    with pytest.raises(ValidationError, match="outputs or an error"):
        PredictionRecord(
            task_id="t", job_id="j", candidate_id="c", example_index=0, example={}, worker_id="w"
        )


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(SchemaError, match="timezone"):
        decode(_wire(Cancel(job_id="j"), requested_at="2025-01-01T00:00:00"), Cancel)


def test_candidate_aggregate_score_is_percent_of_done() -> None:
    aggregate = CandidateAggregate(candidate_id="c", total=10, done=4, score_sum=3.0)
    assert aggregate.score == 75.0
    assert CandidateAggregate(candidate_id="c", total=10).score == 0.0


def test_job_status_helpers(samples: list[BaseModel]) -> None:
    status = next(item for item in samples if isinstance(item, JobStatus))
    assert not status.finished
    found = status.candidate("cand-1")
    assert found is not None and found.done == 3
    assert status.candidate("nope") is None
    assert status.model_copy(update={"state": "failed"}).finished


def test_usage_adds_up() -> None:
    total = UsageRecord(prompt_tokens=1, completion_tokens=2, lm_calls=1) + UsageRecord(
        prompt_tokens=3, cost_usd=0.5, lm_calls=1, cache_hits=1
    )
    assert (total.prompt_tokens, total.total_tokens, total.lm_calls, total.cache_hits) == (4, 6, 2, 1)
    assert total.cost_usd == 0.5


def test_eval_job_total_tasks(samples: list[BaseModel]) -> None:
    job = next(item for item in samples if isinstance(item, EvalJob))
    assert job.total_tasks == 40
