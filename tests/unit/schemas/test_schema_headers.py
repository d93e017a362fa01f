"""Headers derived from messages, ids read back from raw headers, dead letters, keys."""

from __future__ import annotations

import base64

import pytest
from pydantic import BaseModel

from dspex.errors import ConfigurationError
from dspex.schemas import (
    HEADER_CANDIDATE_ID,
    HEADER_EXAMPLE_INDEX,
    HEADER_JOB_ID,
    HEADER_SCHEMA,
    TOPIC_KEY_FIELDS,
    TOPIC_ROLES,
    TOPIC_VALUE_MODELS,
    DeadLetter,
    EvalJob,
    HeaderIds,
    ScoreRecord,
    Task,
    WorkerHeartbeat,
    decode,
    encode,
    headers_for,
    ids_from_headers,
    key_for,
    parse_schema_header,
)
from dspex.schemas.headers import HEADER_PRIORITY


def test_header_names() -> None:
    assert (HEADER_JOB_ID, HEADER_CANDIDATE_ID, HEADER_EXAMPLE_INDEX, HEADER_SCHEMA) == (
        "dspex-job-id",
        "dspex-candidate-id",
        "dspex-example-index",
        "dspex-schema",
    )


def test_task_headers_carry_all_three_ids_and_the_schema(samples: list[BaseModel]) -> None:
    task = next(item for item in samples if isinstance(item, Task))
    headers = headers_for(task)
    assert dict(headers) == {
        HEADER_SCHEMA: b"Task/1.3",
        HEADER_JOB_ID: b"job-1",
        HEADER_CANDIDATE_ID: b"cand-1",
        HEADER_EXAMPLE_INDEX: b"7",
    }
    assert ids_from_headers(headers) == HeaderIds("job-1", "cand-1", 7)
    assert parse_schema_header(dict(headers)[HEADER_SCHEMA]) == ("Task", "1.3")


def test_headers_only_name_what_the_model_has(samples: list[BaseModel]) -> None:
    job = next(item for item in samples if isinstance(item, EvalJob))
    assert dict(headers_for(job)) == {HEADER_SCHEMA: b"EvalJob/1.2", HEADER_JOB_ID: b"job-1"}
    beat = next(item for item in samples if isinstance(item, WorkerHeartbeat))
    assert dict(headers_for(beat)) == {HEADER_SCHEMA: b"WorkerHeartbeat/1.1"}


def test_a_score_with_index_zero_still_gets_its_index_header() -> None:
    score = ScoreRecord(job_id="j", candidate_id="c", example_index=0, task_id="t", score=1.0)
    assert ids_from_headers(headers_for(score)) == HeaderIds("j", "c", 0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, HeaderIds(None, None, None)),
        ([], HeaderIds(None, None, None)),
        ({HEADER_JOB_ID: "j", HEADER_EXAMPLE_INDEX: "12"}, HeaderIds("j", None, 12)),
        ([(HEADER_JOB_ID, b"\xff"), (HEADER_EXAMPLE_INDEX, b"-1")], HeaderIds(None, None, None)),
        ([(HEADER_EXAMPLE_INDEX, b"3x"), (HEADER_CANDIDATE_ID, None)], HeaderIds(None, None, None)),
        ([(HEADER_JOB_ID, b"first"), (HEADER_JOB_ID, b"second")], HeaderIds("first", None, None)),
        ([(HEADER_JOB_ID, b""), ("other", b"x")], HeaderIds(None, None, None)),
    ],
)
def test_ids_from_headers_never_raises(headers: object, expected: HeaderIds) -> None:
    assert ids_from_headers(headers) == expected  # type: ignore[arg-type]


def test_parse_schema_header_of_garbage_is_none() -> None:
    assert parse_schema_header(None) is None
    assert parse_schema_header(b"Task") is None


def test_dead_letter_keeps_original_bytes_and_ids_from_headers(samples: list[BaseModel]) -> None:
    letter = next(item for item in samples if isinstance(item, DeadLetter))
    assert letter.value_bytes() == b"\xff\x00not json"
    assert letter.key_bytes() == b"task-key"
    expected = [("dspex-job-id", b"job-1"), ("dspex-example-index", b"7"), ("empty", None)]
    assert letter.raw_headers() == expected
    assert (letter.job_id, letter.candidate_id, letter.example_index) == ("job-1", None, 7)
    assert (letter.error_type, letter.error, letter.reason) == ("ValueError", "bad bytes", "undecodable")
    assert decode(encode(letter), DeadLetter).value_bytes() == b"\xff\x00not json"


def test_dead_letter_of_a_tombstone_without_headers() -> None:
    letter = DeadLetter.build(
        topic="t", partition=0, offset=0, key=None, value=None, headers=None,
        error="empty", reason="schema_invalid", worker_id="w",
    )  # fmt: skip
    assert (letter.key_bytes(), letter.value_bytes(), letter.raw_headers()) == (None, None, [])
    assert letter.error_type == "str"


def test_dead_letter_refuses_values_that_are_not_base64() -> None:
    letter = DeadLetter.build(
        topic="t", partition=0, offset=0, key=None, value=b"x", headers=None,
        error="e", reason="undecodable", worker_id="w",
    )  # fmt: skip
    bad = encode(letter).replace(base64.b64encode(b"x"), b"not base64!")
    with pytest.raises(Exception, match=r"value: Value error, not valid base64"):
        decode(bad, DeadLetter)


def test_topic_registry_covers_every_role() -> None:
    assert set(TOPIC_ROLES) == {
        "jobs", "candidates", "tasks", "predictions", "scores", "status", "workers", "dlq", "optimizer-state",
        "submit", "lm-requests", "lm-responses", "lm-batches",
    }  # fmt: skip
    assert set(TOPIC_KEY_FIELDS) == set(TOPIC_VALUE_MODELS)


def test_keys_follow_the_design(samples: list[BaseModel]) -> None:
    by_type = {type(item).__name__: item for item in samples}
    assert key_for("tasks", by_type["Task"]) == by_type["Task"].task_id.encode()  # type: ignore[attr-defined]
    assert key_for("scores", by_type["ScoreRecord"]) == b"job-1"
    assert key_for("jobs", by_type["Cancel"]) == b"job-1"
    assert key_for("workers", by_type["WorkerHeartbeat"]) == b"w-1"
    assert key_for("dlq", by_type["DeadLetter"]) == b"task-key"
    with pytest.raises(ConfigurationError, match="unknown topic role 'nope'"):
        key_for("nope", by_type["Task"])


def test_which_id_headers_a_model_has_is_known_per_model_class() -> None:
    # the fields are looked up once per class: a subclass with more of them gets its own headers
    class PrioritisedScore(ScoreRecord):
        priority: str | None = None

    plain = ScoreRecord(job_id="j", candidate_id="c", example_index=1, task_id="t", score=1.0)
    prioritised = PrioritisedScore(job_id="j", candidate_id="c", example_index=1, task_id="t", score=1.0)
    urgent = prioritised.model_copy(update={"priority": "high"})
    for _ in range(2):  # the second time from what was found the first
        assert dict(headers_for(urgent))[HEADER_PRIORITY] == b"high"
        assert HEADER_PRIORITY not in dict(headers_for(prioritised))  # None: no header
        assert HEADER_PRIORITY not in dict(headers_for(plain))
        assert ids_from_headers(headers_for(urgent)) == HeaderIds("j", "c", 1)
