"""``stop_reason`` on JobStatus, OptimizeStatus and Cancel: typed, optional, readable both ways."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from dspex.errors import SchemaError
from dspex.schemas import (
    Cancel,
    JobStatus,
    OptimizeStatus,
    OptimizeStopReason,
    StatusMessage,
    StopReason,
    decode,
    encode,
    json_schemas,
)


def test_a_status_of_a_writer_before_stop_reasons_reads_with_none() -> None:
    data = json.loads(encode(JobStatus(job_id="j", state="failed", total_tasks=3, stop_reason="max_errors")))
    del data["stop_reason"]
    data["schema_version"] = "1.0"
    status = decode(json.dumps(data).encode(), StatusMessage)
    assert isinstance(status, JobStatus) and status.stop_reason is None


def test_an_older_reader_ignores_the_field() -> None:
    class OldJobStatus(JobStatus):  # what a 1.0 reader is: the same model without the field
        model_config = {**JobStatus.model_config, "extra": "ignore"}

    raw = encode(JobStatus(job_id="j", state="failed", total_tasks=3, stop_reason="systemic"))
    assert decode(raw, OldJobStatus).state == "failed"


def test_a_stop_reason_of_the_wrong_type_is_an_error_naming_the_field() -> None:
    raw = encode(JobStatus(job_id="j", state="failed", total_tasks=3)).replace(
        b'"stop_reason":null', b'"stop_reason":7'
    )
    with pytest.raises(SchemaError, match="stop_reason"):
        decode(raw, JobStatus)


def test_the_exported_schemas_list_every_stop_reason_and_require_none() -> None:
    schemas = json_schemas()
    for name, reasons, version in (
        ("JobStatus", StopReason, "1.3"),
        ("OptimizeStatus", OptimizeStopReason, "1.2"),
    ):
        schema = schemas[name]
        assert schema["x-dspex-schema-version"] == version  # 1.3 / 1.2: usage_unreported
        assert "stop_reason" not in schema["required"]
        [enum, null] = schema["properties"]["stop_reason"]["anyOf"]
        assert enum["enum"] == list(get_args(reasons)) and null == {"type": "null"}
    cancel = schemas["Cancel"]["properties"]["stop_reason"]["anyOf"][0]["enum"]
    assert cancel == ["cancelled", "tasks_missing"]


def test_the_literals_are_what_the_issue_names() -> None:
    assert set(get_args(StopReason)) == {
        "systemic", "max_errors", "max_cost", "cancelled", "tasks_missing", "invalid_submit"
    }  # fmt: skip
    assert {"max_lm_calls", "max_cost"} <= set(get_args(OptimizeStopReason))
    assert OptimizeStatus(
        job_id="j", state="completed", optimizer="x", stop_reason="max_lm_calls"
    ).stop_reason
    assert Cancel(job_id="j", stop_reason="tasks_missing").stop_reason == "tasks_missing"
