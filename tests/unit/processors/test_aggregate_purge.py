"""A purged job stays purged in the aggregator's state (see :mod:`dspex.processors.aggregate_state`).

A PurgeJob replaces the job's value by a marker, drops its chunks and asks for its status to be
tombstoned; a late attempt, a usage report, a Cancel or the job record read again afterwards sends
no status and stores nothing; the marker goes once its window has passed, and survives being read
back from the changelog (a restart or a rebalance) in between. The workers' job cache treats the
job as stopped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dspex.processors.aggregate_state import (
    LATE_USAGE_WINDOW_S,
    AggregateBatch,
    BatchResult,
    JobMeta,
    StatusClock,
    chunk_key,
    invalid_job_id,
)
from dspex.processors.jobcache import JobCache
from dspex.schemas import (
    Cancel,
    EvalJob,
    JobMessage,
    MetricSpec,
    PurgeJob,
    ScoreRecord,
    UsageRecord,
    UsageReport,
    decode,
    encode,
)
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry

T0 = datetime(2025, 1, 1, tzinfo=UTC)
Item = EvalJob | Cancel | PurgeJob | ScoreRecord | UsageReport


def _job(job_id: str = "j1") -> EvalJob:
    metric = MetricSpec(name="exact_match:answer")
    return EvalJob(job_id=job_id, candidate_ids=["c1"], metric=metric, num_examples=2)


def _score(index: int, attempt_id: str, job_id: str = "j1") -> ScoreRecord:
    usage = UsageRecord(prompt_tokens=10, completion_tokens=2, cost_usd=0.5, lm_calls=1)
    return ScoreRecord(
        job_id=job_id, candidate_id="c1", example_index=index, task_id=f"t{index}", score=1.0,
        usage=usage, attempt_id=attempt_id,
    )  # fmt: skip


def _report(index: int, attempt_id: str) -> UsageReport:
    usage = UsageRecord(prompt_tokens=10, completion_tokens=2, cost_usd=0.5, lm_calls=1)
    return UsageReport(
        job_id="j1", candidate_id="c1", example_index=index, task_id=f"t{index}", attempt_id=attempt_id,
        usage=usage, worker_id="w1",
    )  # fmt: skip


class _Tables:
    """The tables as the changelog keeps them (JSON, deletions applied) and what was sent."""

    def __init__(self) -> None:
        self.jobs: dict[str, Any] = {}
        self.chunks: dict[str, Any] = {}
        self.statuses: list[str] = []
        self.tombstoned: list[str] = []
        self.clock = StatusClock(lambda: T0)

    def run(self, *items: Item) -> BatchResult:
        batch = AggregateBatch(self.jobs, self.chunks, self.clock)
        for item in items:
            if isinstance(item, EvalJob):
                batch.add_job(item, 0)
            elif isinstance(item, Cancel):
                batch.add_cancel(item, 0)
            elif isinstance(item, PurgeJob):
                batch.add_purge(item, 0)
            elif isinstance(item, UsageReport):
                batch.add_usage_report(item, 0)
            else:
                batch.add_score(item, 0)
        result = batch.finish()
        self.jobs.update({key: json.loads(json.dumps(value)) for key, (_, value) in result.jobs.items()})
        self.chunks.update({key: json.loads(json.dumps(value)) for key, (_, value) in result.chunks.items()})
        for key in result.dropped_chunks:
            self.chunks.pop(key, None)
        self.statuses += [job_id for job_id, _ in result.statuses]
        self.tombstoned += result.purged
        return result


def test_a_purged_job_sends_no_status_for_late_records_or_a_cancel() -> None:
    tables = _Tables()
    tables.run(_job(), _job("other"), _score(0, "a0"), _score(1, "a1"))
    assert tables.statuses == ["j1"] and tables.chunks  # completed

    purged = tables.run(PurgeJob(job_id="j1"))
    assert purged.purged == ["j1"] and purged.statuses == []
    assert set(purged.dropped_chunks) == {chunk_key("j1", "c1", 0)} and not tables.chunks
    assert tables.tombstoned == ["j1"]

    later = tables.run(_score(1, "late"), _report(0, "cut"), Cancel(job_id="j1"), _job())
    assert later.statuses == [] and later.jobs == {} and later.chunks == {}
    assert tables.statuses == ["j1"] and not tables.chunks  # nothing came back
    meta = JobMeta.from_value("j1", tables.jobs["j1"])
    assert meta.purged and not meta.known and meta.final is None and meta.outcome is None
    assert meta.purged_until == T0.timestamp() + LATE_USAGE_WINDOW_S
    # Another job on the same partition is cancelled as before: the purge is the job's alone.
    assert [job_id for job_id, _ in tables.run(Cancel(job_id="other")).statuses] == ["other"]


def test_records_before_the_purge_in_the_same_batch_are_dropped_with_it() -> None:
    tables = _Tables()
    result = tables.run(_job(), _score(0, "a0"), _score(1, "a1"), PurgeJob(job_id="j1"), _score(1, "b1"))
    assert result.statuses == [] and result.chunks == {} and result.purged == ["j1"]
    assert set(result.dropped_chunks) == {chunk_key("j1", "c1", 0)}


def test_the_stored_chunks_of_a_job_never_read_are_dropped_too() -> None:
    tables = _Tables()
    tables.run(_score(0, "a0", job_id="unread"), _score(0, "a0"))  # scores only: no EvalJob read
    assert set(tables.chunks) == {chunk_key("unread", "c1", 0), chunk_key("j1", "c1", 0)}
    result = tables.run(PurgeJob(job_id="unread"))
    assert set(result.dropped_chunks) == {chunk_key("unread", "c1", 0)}
    assert set(tables.chunks) == {chunk_key("j1", "c1", 0)}  # another job's chunks stay


def test_the_marker_survives_a_reload_and_expires_with_its_window() -> None:
    tables = _Tables()
    tables.run(_job(), _score(0, "a0"), _score(1, "a1"), PurgeJob(job_id="j1"))
    restarted = _Tables()  # a new instance reading the changelog back
    restarted.jobs = json.loads(json.dumps(tables.jobs))
    assert restarted.run(_score(0, "again"), Cancel(job_id="j1")).statuses == []
    meta = JobMeta.from_value("j1", restarted.jobs["j1"])
    end = T0.timestamp() + LATE_USAGE_WINDOW_S
    assert not meta.purge_over(end - 1) and meta.purge_over(end)
    assert not JobMeta("x", 0, T0.isoformat()).purge_over(end + 1)


def test_a_purge_notice_is_never_taken_for_an_invalid_job_record() -> None:
    assert invalid_job_id(b"j1", encode(PurgeJob(job_id="j1"))) is None
    assert isinstance(decode(encode(PurgeJob(job_id="j1")), JobMessage), PurgeJob)
    assert PurgeJob(job_id="j1").requested_at.tzinfo is not None
    assert timedelta(seconds=LATE_USAGE_WINDOW_S) == timedelta(minutes=10)


def test_workers_job_cache_treats_a_purged_job_as_stopped() -> None:
    cache = JobCache(KafkaSettings(bootstrap_servers="127.0.0.1:1"), TopicRegistry("t."), follow_status=False)
    cache._sort_job_message(encode(_job()))
    assert not cache.purged("j1") and cache.stop_reason("j1") is None
    waiting = cache.stopped("j1")
    cache._sort_job_message(encode(PurgeJob(job_id="j1")))
    assert cache.purged("j1") and cache.stop_reason("j1") == "cancelled" and waiting.is_set()
    assert not cache.purged("other")
