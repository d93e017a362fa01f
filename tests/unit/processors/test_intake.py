"""The intake worker's expansion of a submit message equals what the Python client publishes, bad
submit messages are refused with a reason, and the tasks-missing sweep picks the right jobs."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from dspex.client._submit import Limits, Policy, build_submission
from dspex.errors import ConfigurationError, DspexError, SchemaError
from dspex.modules import Predict
from dspex.primitives import Example
from dspex.processors.common import WorkerOptions
from dspex.processors.intake import Intake, expand, invalid_submit_status, submit_job_id
from dspex.schemas import (
    EvalJob,
    JobStatus,
    LMSpec,
    MetricSpec,
    SubmitJob,
    decode,
    encode,
    export_json_schemas,
)
from dspex.schemas.base import utc_now
from dspex.schemas.registry import TOPIC_KEY_FIELDS, TOPIC_VALUE_MODELS, key_for
from dspex.serialization import dump_program
from dspex.signatures import make_signature
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry

PROTOCOL_DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
ROWS = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)]


def program() -> dict[str, Any]:
    return dump_program(Predict(make_signature("question -> answer", "Answer with a number.")))


def submit(**changes: Any) -> SubmitJob:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "name": "mine",
        "program": program(),
        "examples": ROWS,
        "input_keys": ["question"],
        "metric": "exact_match:answer",
        "priority": "bulk",
        "num_threads": 4,
        "max_errors": 2,
        **changes,
    }
    return SubmitJob(**fields)


def test_expansion_equals_the_clients_submission() -> None:
    mine = expand(submit(), program(), policy=Policy())
    devset = [Example(**row).with_inputs("question") for row in ROWS]
    limits = Limits(name="mine", max_errors=2, priority="bulk", num_threads=4)
    client = build_submission(
        [program()], devset, "exact_match:answer", policy=Policy(), limits=limits, job_id="job-1"
    )
    skip = {"created_at"}
    assert mine.job.model_dump(exclude=skip) == client.job.model_dump(exclude=skip)
    assert [s.candidate_id for s in mine.specs] == [s.candidate_id for s in client.specs]
    assert [t.model_dump() for t in mine.tasks()] == [t.model_dump() for t in client.tasks()]
    assert len(list(mine.tasks())) == 5 and mine.job.max_in_flight == 4


def test_the_submitted_lm_travels_with_the_job_and_its_tasks() -> None:
    lm = LMSpec(model="openai/simulated", api_base="http://127.0.0.1:9/v1")
    expanded = expand(submit(lm=lm), program(), policy=Policy())
    assert expanded.job.lm == lm
    assert all(task.lm == lm for task in expanded.tasks())


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"metric": "no_such_metric:answer"}, "no_such_metric"),
        ({"input_keys": ["prompt"]}, "prompt"),
        ({"program": {"dspex_program": 1, "type": "os.system"}}, "os"),
    ],
)
def test_expansion_refuses_what_the_client_refuses(changes: dict[str, Any], needle: str) -> None:
    message = submit(**changes)
    with pytest.raises(DspexError, match=needle):
        expand(message, message.program or {}, policy=Policy())


@pytest.mark.parametrize(
    "changes",
    [
        {"candidate_id": "c" * 32},  # a program and a candidate id
        {"program": None},  # neither
        {"job_id": "has space"},
        {"examples": []},
        {"priority": "urgent"},
    ],
)
def test_a_malformed_submit_message_does_not_validate(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        submit(**changes)


def test_on_the_wire_a_submit_needs_its_schema_version_and_travels_keyed_by_job() -> None:
    message = submit()
    assert decode(encode(message), SubmitJob) == message
    with pytest.raises(SchemaError):
        decode(
            b'{"job_id": "j", "program": {}, "examples": [{}], "input_keys": ["q"], "metric": "m"}', SubmitJob
        )
    assert TOPIC_VALUE_MODELS["submit"] is SubmitJob and TOPIC_KEY_FIELDS["submit"] == "job_id"
    assert key_for("submit", message) == b"job-1"
    assert TopicRegistry("p.").name("submit") == "p.submit"


def test_the_job_of_a_refused_message_is_its_key_else_its_json() -> None:
    assert submit_job_id(b"from-key", b'{"job_id": "from-json"}') == "from-key"
    assert submit_job_id(None, b'{"job_id": "from-json"}') == "from-json"
    assert submit_job_id(None, b"not json") is None
    assert submit_job_id(None, b'{"job_id": 3}') is None
    status = invalid_submit_status("j", "the submit message is invalid (schema_invalid): no program")
    assert (status.state, status.stop_reason, status.finished) == ("failed", "invalid_submit", True)
    assert decode(encode(status), JobStatus) == status


class Jobs:
    """What the sweep reads of a job cache: evaluations, their stop reasons and statuses."""

    def __init__(self, jobs: list[EvalJob], statuses: dict[str, JobStatus], stopped: set[str]) -> None:
        self.jobs, self.statuses, self.stopped = jobs, statuses, stopped

    def eval_jobs(self) -> list[EvalJob]:
        return self.jobs

    def stop_reason(self, job_id: str) -> str | None:
        return "cancelled" if job_id in self.stopped else None

    def status(self, job_id: str) -> JobStatus | None:
        return self.statuses.get(job_id)

    def purged(self, job_id: str) -> bool:
        return job_id.startswith("purged")  # a tombstone was read for its status


def test_the_sweep_picks_old_jobs_with_nothing_done() -> None:
    old = utc_now() - timedelta(seconds=120)

    def job(job_id: str, **fields: Any) -> EvalJob:
        values: dict[str, Any] = {"created_at": old, **fields}
        return EvalJob(
            job_id=job_id, candidate_ids=["c"], metric=MetricSpec(name="m"), num_examples=3, **values
        )

    def status(job_id: str, state: Any, done: int) -> JobStatus:
        return JobStatus(job_id=job_id, state=state, total_tasks=3, done=done)

    jobs = [
        job("no-status"),
        job("nothing-done"),
        job("some-done"),
        job("completed"),
        job("cancelled"),
        job("young", created_at=utc_now()),
        job("purged-after-completing"),  # no status on purpose: failing it would write one back
    ]
    statuses = {
        "nothing-done": status("nothing-done", "running", 0),
        "some-done": status("some-done", "running", 1),
        "completed": status("completed", "completed", 3),
    }
    intake = Intake(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"), WorkerOptions(metrics=False), tasks_timeout_s=60
    )
    intake.jobs = Jobs(jobs, statuses, {"cancelled"})  # type: ignore[assignment]
    assert [j.job_id for j in intake._stale_jobs()] == ["no-status", "nothing-done"]
    with pytest.raises(ConfigurationError):
        Intake(KafkaSettings(bootstrap_servers="127.0.0.1:1"), tasks_timeout_s=0)


def test_the_documented_submit_message_decodes_and_expands() -> None:
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    documented = re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)[0]
    message = decode(json.dumps(json.loads(documented)).encode(), SubmitJob)
    assert message.program is not None
    expanded = expand(message, message.program, policy=Policy())
    assert expanded.job.job_id == message.job_id and expanded.job.total_tasks == len(message.examples) == 4
    assert expanded.job.lm == message.lm and expanded.job.metric.name == "numeric_equal:answer"


def test_a_batch_submit_expands_as_the_clients_batch_mode() -> None:
    mine = expand(submit(mode="batch"), program(), policy=Policy())
    devset = [Example(**row).with_inputs("question") for row in ROWS]
    limits = Limits(name="mine", max_errors=2, priority="bulk", num_threads=4, lm_mode="batch")
    client = build_submission(
        [program()], devset, "exact_match:answer", policy=Policy(), limits=limits, job_id="job-1"
    )
    assert mine.lm_mode == client.lm_mode == "batch"
    assert [t.model_dump() for t in mine.tasks()] == [t.model_dump() for t in client.tasks()]
    assert {task.lm_mode for task in mine.tasks()} == {"batch"}
    online = expand(submit(mode="online"), program(), policy=Policy())
    assert online.lm_mode is None and {task.lm_mode for task in online.tasks()} == {None}


def test_a_submit_of_schema_1_0_has_no_mode_and_runs_online() -> None:
    wire = json.loads(encode(submit()))
    assert wire["schema_version"] == "1.1" and wire["mode"] == "online"
    del wire["mode"]
    older = decode(json.dumps({**wire, "schema_version": "1.0"}).encode(), SubmitJob)
    assert older.mode == "online" and expand(older, program(), policy=Policy()).lm_mode is None
    with pytest.raises(SchemaError):
        decode(json.dumps({**wire, "mode": "fast"}).encode(), SubmitJob)


def test_the_exported_submit_schema_knows_the_mode(tmp_path: Path) -> None:
    export_json_schemas(tmp_path)
    schema = json.loads((tmp_path / "SubmitJob.schema.json").read_text(encoding="utf-8"))
    assert schema["x-dspex-schema-version"] == "1.1"
    assert schema["properties"]["mode"]["enum"] == ["online", "batch"]
    assert "mode" not in schema["required"]
    wire = json.loads(encode(submit(mode="batch")))
    jsonschema.validate(wire, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**wire, "mode": "fast"}, schema)
