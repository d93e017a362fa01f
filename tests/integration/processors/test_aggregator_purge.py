"""A purge the aggregator read stays honoured, across a kill -9 and restart, against a real broker.

A finished job is purged (a PurgeJob on the jobs topic): the aggregator tombstones its status. The
aggregator is then killed and another one started; a late attempt and a Cancel of the purged job
bring no status back, while the same records for a finished job that was not purged do (its
terminal status is sent again: the records were read).
The aggregator's own state goes too: the purged job's keys in its faust changelog topics end in
tombstones (chunks) or in a marker that holds nothing of the job but its partition and start time
(jobs; the marker is itself tombstoned when the 10-minute window ends), read as a compacted reader
would: the latest record per key. The second aggregator removes the state folder of the first (killed,
so its lock on it is gone) when it starts.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from test_aggregator import (  # the aggregator subprocess harness
    CANDIDATES,
    DEADLINE_S,
    EXAMPLES,
    Pipeline,
    make_job,
    make_score,
    pipeline,  # noqa: F401 (the fixture)
    send_scores,
)

from dspex.processors.aggregate_state import JobMeta
from dspex.schemas import Cancel, PurgeJob, ScoreRecord

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

WATCH_S = 5.0


def status_records(pipe: Pipeline, job_ids: set[str], until: float) -> list[tuple[str, bool]]:
    """``(job_id, is_tombstone)`` of every status record of ``job_ids`` read until ``until``."""
    seen = []
    keys = {job_id.encode() for job_id in job_ids}
    while time.monotonic() < until:
        message = pipe._status.poll(0.25)
        if message is not None and message.error() is None and message.key() in keys:
            seen.append((message.key().decode(), message.value() is None))
    return seen


def latest_by_key(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """Every key of ``topic`` with its latest value (None: a tombstone), read to its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"purge-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    latest: dict[bytes, bytes | None] = {}
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        todo = {p: high for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        deadline = time.monotonic() + 30
        while todo and time.monotonic() < deadline:
            message = consumer.poll(0.25)
            if message is None or message.error() is not None:
                continue
            latest[message.key()] = message.value()
            if message.offset() + 1 >= todo.get(message.partition(), 0):
                todo.pop(message.partition(), None)
        assert not todo, f"{topic} not read to its end: {todo}"
    finally:
        consumer.close()
    return latest


def changelog(pipe: Pipeline, table: str) -> dict[bytes, bytes | None]:
    return latest_by_key(pipe.bootstrap, f"{pipe.registry.prefix}aggregate-{table}-changelog")


def of_job(records: dict[bytes, bytes | None], job_id: str) -> dict[str, bytes | None]:
    """The records of ``job_id``'s keys (faust writes the keys JSON-encoded)."""
    found = {}
    for raw, value in records.items():
        key = json.loads(raw)
        if key == job_id or key.startswith(f"{job_id}:"):
            found[key] = value
    return found


def assert_state_purged(pipe: Pipeline, purged: str, kept: str) -> None:
    """The purged job's chunks end in tombstones and its jobs key holds a bare marker; the kept
    job's keys keep their values (waits for the aggregator's writes of the purge batch)."""
    deadline = time.monotonic() + 30
    while True:
        chunks = changelog(pipe, "chunks")
        if all(v is None for v in of_job(chunks, purged).values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    gone, alive = of_job(chunks, purged), of_job(chunks, kept)
    assert gone and all(value is None for value in gone.values()), gone.keys()
    assert alive.keys() == {key.replace(purged, kept, 1) for key in gone}  # the same chunk layout
    assert all(value is not None for value in alive.values())
    jobs = changelog(pipe, "jobs")
    marker = of_job(jobs, purged)[purged]
    assert marker is not None
    held = json.loads(marker)
    assert held["purged_until"] is not None
    # every other field at its default: no name, candidates, limits, status or usage of the job
    assert (
        held
        == JobMeta(
            purged, held["partition"], held["started_at"], purged_until=held["purged_until"]
        ).to_value()
    )
    kept_value = of_job(jobs, kept)[kept]
    assert kept_value is not None and json.loads(kept_value)["candidate_ids"] == list(CANDIDATES)


def late_attempt(job_id: str) -> ScoreRecord:
    return make_score(job_id, CANDIDATES[0], 0).model_copy(update={"attempt_id": f"late-{job_id}"})


def test_a_purged_job_stays_purged_after_a_restart(pipeline: Pipeline) -> None:  # noqa: F811
    purged, kept = "job-purged", "job-kept"
    first = pipeline.start_aggregator()
    for job_id in (purged, kept):
        pipeline.send("jobs", make_job(job_id))
        send_scores(pipeline, job_id, range(EXAMPLES))
    pipeline.wait_all([purged, kept], first, lambda s: s.finished)

    pipeline.send("jobs", PurgeJob(job_id=purged))  # type: ignore[arg-type]
    pipeline.flush()
    deadline = time.monotonic() + DEADLINE_S
    records: list[tuple[str, bool]] = []
    while (purged, True) not in records:
        assert time.monotonic() < deadline, f"no tombstone of {purged}\n{first.tail()}"
        records += status_records(pipeline, {purged}, time.monotonic() + 1)
    assert records[-1] == (purged, True), records  # nothing after the aggregator's tombstone
    assert_state_purged(pipeline, purged, kept)

    first.process.kill()
    first.process.wait()
    second = pipeline.start_aggregator()
    for job_id in (purged, kept):
        pipeline.send("scores", late_attempt(job_id))
        pipeline.send("jobs", Cancel(job_id=job_id, reason="after the end"))  # type: ignore[arg-type]
    pipeline.flush()
    # The kept job's status comes again once the new aggregator has read these records; the
    # purged one's never does, then or in the seconds after.
    deadline = time.monotonic() + DEADLINE_S
    seen: list[tuple[str, bool]] = []
    while (kept, False) not in seen:
        assert time.monotonic() < deadline, f"the restarted aggregator read nothing\n{second.tail()}"
        seen += status_records(pipeline, {purged, kept}, time.monotonic() + 1)
    seen += status_records(pipeline, {purged, kept}, time.monotonic() + WATCH_S)
    assert [record for record in seen if record[0] == purged] == []
    assert second.process.poll() is None, second.tail()
    # the killed aggregator's state folder is gone: the second one removed it on start
    assert sorted(path.name for path in (pipeline.tmp_path / "faust").iterdir()) == ["agg1"]
