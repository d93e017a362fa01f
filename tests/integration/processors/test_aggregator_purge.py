"""A purge the aggregator read stays honoured, across a kill -9 and restart, against a real broker.

A finished job is purged (a PurgeJob on the jobs topic): the aggregator tombstones its status. The
aggregator is then killed and another one started; a late attempt and a Cancel of the purged job
bring no status back, while the same records for a finished job that was not purged do (its
terminal status is sent again: the records were read).
"""

from __future__ import annotations

import time

import pytest
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
