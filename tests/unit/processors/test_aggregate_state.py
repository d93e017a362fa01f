"""The aggregator's state transitions, on plain dicts standing in for the faust tables."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from dspex.processors.aggregate_resync import SourcePositions, position_key
from dspex.processors.aggregate_state import (
    CHUNK_SIZE,
    AggregateBatch,
    BatchResult,
    ChunkState,
    JobMeta,
    StatusClock,
    build_status,
    chunk_key,
    job_totals,
    open_state,
)
from dspex.schemas import (
    Cancel,
    ErrorInfo,
    EvalJob,
    JobStatus,
    MetricSpec,
    ScoreRecord,
    UsageRecord,
    decode,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


class Tables:
    """The two tables as dicts, updated from batch results as the faust layer does."""

    def __init__(self) -> None:
        self.jobs: dict[str, Any] = {}
        self.chunks: dict[str, Any] = {}
        self.sent: list[JobStatus] = []
        self.ticks = 0
        self.clock = StatusClock(self._now)

    def _now(self) -> datetime:
        self.ticks += 1
        return T0 + timedelta(seconds=self.ticks)

    def batch(self) -> AggregateBatch:
        return AggregateBatch(self.jobs, self.chunks, self.clock)

    def apply(self, batch: AggregateBatch) -> BatchResult:
        result = batch.finish()
        self.jobs.update({key: value for key, (_, value) in result.jobs.items()})
        self.chunks.update({key: value for key, (_, value) in result.chunks.items()})
        self.sent.extend(decode(raw, JobStatus) for _, raw in result.statuses)
        return result

    def meta(self, job_id: str) -> JobMeta:
        return JobMeta.from_value(job_id, self.jobs[job_id])

    def status(self, job_id: str) -> JobStatus:
        meta = self.meta(job_id)
        totals = job_totals(meta, self.chunks.get)
        return build_status(meta, totals, state=open_state(totals), seq=1, now=T0)


def job(n: int = 10, candidates: tuple[str, ...] = ("c1", "c2"), **limits: Any) -> EvalJob:
    metric = MetricSpec(name="exact_match:answer")
    return EvalJob(job_id="j1", candidate_ids=list(candidates), metric=metric, num_examples=n, **limits)


def score(index: int, value: float = 1.0, cand: str = "c1", **extra: Any) -> ScoreRecord:
    return ScoreRecord(
        job_id="j1", candidate_id=cand, example_index=index, task_id=f"t{cand}{index}", score=value, **extra
    )


def error(message: str = "boom", systemic: bool = False) -> ErrorInfo:
    return ErrorInfo(type="LMError", message=message, systemic=systemic)


def run(tables: Tables, *items: EvalJob | ScoreRecord | Cancel, partition: int = 0) -> BatchResult:
    batch = tables.batch()
    for item in items:
        if isinstance(item, EvalJob):
            batch.add_job(item, partition)
        elif isinstance(item, Cancel):
            batch.add_cancel(item, partition)
        else:
            batch.add_score(item, partition)
    return tables.apply(batch)


def test_first_score_wins_and_duplicates_change_nothing() -> None:
    tables = Tables()
    batch = tables.batch()
    batch.add_job(job(), 0)
    outcomes = [
        batch.add_score(score(0, 1.0, usage=UsageRecord(prompt_tokens=5, cost_usd=0.5)), 0),
        batch.add_score(score(0, 0.0, error=error(), usage=UsageRecord(prompt_tokens=7, cost_usd=9.0)), 0),
    ]
    tables.apply(batch)
    again = tables.batch()
    outcomes.append(again.add_score(score(0, 0.0, error=error()), 0))
    tables.apply(again)

    assert outcomes == ["counted", "duplicate", "duplicate"]
    first = tables.status("j1").candidates[0]
    assert (first.done, first.errors, first.score_sum) == (1, 0, 1.0)
    assert (first.usage.prompt_tokens, first.usage.cost_usd) == (5, 0.5)


def test_indices_on_both_sides_of_a_chunk_boundary_land_in_their_own_chunks() -> None:
    tables = Tables()
    edges = [0, CHUNK_SIZE - 1, CHUNK_SIZE, 2 * CHUNK_SIZE - 1, 2 * CHUNK_SIZE]
    run(tables, job(n=3 * CHUNK_SIZE, candidates=("c1",)), *(score(i) for i in edges))

    chunks = {key: ChunkState.from_value(value) for key, value in tables.chunks.items()}
    assert sorted(chunks) == [chunk_key("j1", "c1", c) for c in (0, 1, 2)]
    assert [chunks[chunk_key("j1", "c1", c)].totals.done for c in (0, 1, 2)] == [2, 2, 1]
    last = chunks[chunk_key("j1", "c1", 0)].bits
    assert last[0] == 0b1 and last[-1] == 0b1000_0000 and len(last) == CHUNK_SIZE // 8
    # the same indices again, one batch later: all duplicates
    batch = tables.batch()
    assert {batch.add_score(score(i, 0.0), 0) for i in edges} == {"duplicate"}


def test_sums_are_exact_and_round_like_fsum() -> None:
    values = [0.1] * 10 + [2 / 3, 0.3, 1 / 7]
    assert math.fsum(values[:10]) != sum(values[:10])  # where naive float summing drifts
    tables = Tables()
    run(tables, job(n=len(values), candidates=("c1",)))
    for start in range(0, len(values), 3):  # several batches, partial sums persisted in between
        run(
            tables,
            *(
                score(i, values[i], usage=UsageRecord(cost_usd=values[i]))
                for i in range(start, start + 3)
                if i < len(values)
            ),
        )

    status = tables.sent[-1]
    assert status.state == "completed"
    assert status.candidates[0].score_sum == math.fsum(values)
    assert status.usage.cost_usd == math.fsum(values)


def test_completion_emits_one_terminal_status_then_the_same_bytes_again() -> None:
    tables = Tables()
    first = run(tables, job(n=3), *(score(i, cand=c) for c in ("c1", "c2") for i in range(2)))
    assert first.statuses == [] and tables.status("j1").state == "running"

    done = run(tables, score(2, cand="c1"), score(2, 0.5, cand="c2", error=error()))
    late = run(tables, score(1, cand="c2"))

    assert [s.state for s in tables.sent] == ["completed", "completed"]
    assert done.statuses == late.statuses  # re-sent byte for byte, never a different status
    final = tables.sent[0]
    assert (final.total_tasks, final.done, final.errors) == (6, 6, 1)
    assert [c.score_sum for c in final.candidates] == [3.0, 2.5]
    assert final.finished_at is not None and final.reason is None
    meta = tables.meta("j1")  # the chunks stay for the late-charge window, then go
    assert meta.late_until is not None and any(key.startswith("j1:") for key in tables.chunks)
    assert meta.late_window_over(meta.late_until) and not meta.late_window_over(meta.late_until - 1)


def test_more_errors_than_max_errors_fails_the_job() -> None:
    tables = Tables()
    run(tables, job(n=10, max_errors=2), score(0, 0.0, error=error()), score(1, 0.0, error=error()))
    assert tables.sent == []  # two errors are allowed
    run(tables, score(2, 0.0, error=error()), score(3))

    [status] = tables.sent
    assert status.state == "failed" and status.errors == 3
    assert "max_errors=2" in (status.reason or "")
    late = run(tables, score(4))
    assert late.statuses and tables.sent[-1] == status  # the same status again; score 4 not counted


def test_a_cost_over_the_budget_fails_the_job() -> None:
    tables = Tables()
    run(tables, job(n=10, max_cost_usd=1.0), score(0, usage=UsageRecord(cost_usd=0.6)))
    assert tables.sent == []
    run(tables, score(1, usage=UsageRecord(cost_usd=0.4)))
    assert tables.sent == []  # exactly at the budget is not over it
    run(tables, score(2, usage=UsageRecord(cost_usd=0.01)))

    [status] = tables.sent
    assert status.state == "failed" and "max_cost_usd" in (status.reason or "")
    assert status.usage.cost_usd == math.fsum([0.6, 0.4, 0.01])


def test_a_systemic_error_fails_the_job_with_its_message() -> None:
    tables = Tables()
    message = "Incorrect API key provided: sk-...xyz (401)"
    run(tables, job(n=100), score(0), score(1, 0.0, error=error(message, systemic=True)))

    [status] = tables.sent
    assert status.state == "failed" and status.reason == message


def test_cancel_ends_a_running_job_and_later_scores_are_ignored() -> None:
    tables = Tables()
    run(tables, job(n=10), score(0))
    run(tables, Cancel(job_id="j1", reason="user asked"))
    later = tables.batch()
    assert later.add_score(score(1), 0) == "ignored"
    tables.apply(later)

    assert [s.state for s in tables.sent] == ["cancelled", "cancelled"]
    assert tables.sent[0].reason == "user asked" and tables.sent[0].done == 1
    assert tables.sent[0] == tables.sent[1]


def test_scores_before_their_job_are_counted_once_the_job_arrives() -> None:
    tables = Tables()
    early = run(tables, *(score(i, 0.5, cand=c) for c in ("c1", "c2") for i in range(3)), partition=5)
    assert early.statuses == [] and not tables.meta("j1").known
    assert tables.sent == []

    run(tables, job(n=4), partition=5)
    status = tables.status("j1")
    assert (status.state, status.total_tasks, status.done) == ("running", 8, 6)
    assert tables.meta("j1").partition == 5

    run(tables, score(3, cand="c1"), score(3, cand="c2"), partition=5)
    assert tables.sent[-1].state == "completed"
    assert [c.score_sum for c in tables.sent[-1].candidates] == [2.5, 2.5]


def test_a_cancel_before_its_job_is_reported_when_the_job_arrives() -> None:
    tables = Tables()
    assert run(tables, Cancel(job_id="j1")).statuses == []
    run(tables, job(n=3))
    [status] = tables.sent
    assert status.state == "cancelled" and status.total_tasks == 6 and status.done == 0


def test_a_systemic_error_before_its_job_fails_it_on_arrival() -> None:
    tables = Tables()
    run(tables, score(0, 0.0, error=error("model not found", systemic=True)))
    run(tables, job(n=3))
    assert [(s.state, s.reason) for s in tables.sent] == [("failed", "model not found")]


def test_scores_outside_a_known_job_are_ignored() -> None:
    tables = Tables()
    batch = tables.batch()
    batch.add_job(job(n=3), 0)
    outcomes = [batch.add_score(score(3), 0), batch.add_score(score(0, cand="other"), 0)]
    tables.apply(batch)
    assert outcomes == ["ignored", "ignored"]
    assert tables.status("j1").done == 0


def test_an_empty_job_completes_at_once() -> None:
    tables = Tables()
    run(tables, job(n=0))
    assert [(s.state, s.total_tasks) for s in tables.sent] == [("completed", 0)]


def test_seq_increases_even_when_the_clock_stands_still() -> None:
    clock = StatusClock(lambda: T0)
    seqs = [clock.next_seq(T0) for _ in range(3)]
    assert seqs == sorted(set(seqs)) and seqs[0] == int(T0.timestamp() * 1000)


def test_state_for_a_100000_task_job_is_small() -> None:
    tables = Tables()
    n = 50_000
    run(tables, job(n=n))
    for start in range(0, n, 5_000):
        run(
            tables,
            *(score(i, cand=c) for c in ("c1", "c2") for i in range(start, start + 5_000) if i != n - 1),
        )

    size = sum(len(str(value)) for value in tables.chunks.values()) + len(str(tables.jobs))
    assert len(tables.chunks) == 2 * math.ceil(n / CHUNK_SIZE)
    assert size < 100_000  # about 100 chunks of ~0.3 kB
    assert tables.status("j1").done == 2 * n - 2


def test_source_positions_apply_records_strictly_in_offset_order_from_the_stored_one() -> None:
    stored = {position_key("scores", 3): 10}
    positions = SourcePositions(stored)
    assert positions.admit("scores", 3, 9) == "replayed"  # faust re-read from an older commit
    assert positions.admit("scores", 3, 12) == "gap"  # 10 and 11 never arrived: held back
    assert positions.gaps == {("scores", 3): 10}
    assert positions.admit("scores", 3, 10) == "apply"  # read again from 10
    assert positions.admit("scores", 3, 11) == "apply"
    assert positions.gaps == {}
    assert positions.admit("jobs", 3, 0) == "apply"  # nothing stored: from the partition's start
    assert positions.admit("jobs", 4, 2) == "gap"
    assert positions.writes() == {"scores:3": (3, 12), "jobs:3": (3, 1)}
    assert stored == {"scores:3": 10}  # the batch's result is written by the caller


def test_source_positions_floor_skips_records_no_longer_on_the_broker() -> None:
    positions = SourcePositions({})
    assert positions.admit("scores", 0, 40, floor=40) == "apply"  # 0..39 deleted by retention
    assert positions.admit("scores", 0, 41) == "apply"
    assert positions.expected("scores", 0) == 42


def test_the_status_names_the_optimization_the_job_is_part_of() -> None:
    tables = Tables()
    run(tables, job(2, parent_job_id="opt-7"), score(0))
    assert tables.status("j1").parent_job_id == "opt-7"
    plain = Tables()
    run(plain, job(2), score(0))
    assert plain.status("j1").parent_job_id is None
