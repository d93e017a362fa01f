"""Predictors that die without a word: when the aggregator takes one for dead, and what it reports.

Rules under test (:mod:`dspex.processors.aggregate_deaths`): a worker is dead once it was silent
for ``dead_after`` seconds while other heartbeats kept arriving without a gap; a broker outage
(nobody heard) judges nobody, and silence counts again only from when heartbeats flow; a final
heartbeat is never a death; a worker heard again is taken back. What a dead predictor left
unreported is set per job (twice is once), shown as ``usage_unreported`` apart from ``usage``,
and a terminal status is restated with it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dspex.processors.aggregate_deaths import (
    DeathWatch,
    death_key,
    record_unreported,
    restate_unreported,
)
from dspex.processors.aggregate_state import JobMeta, StatusClock, Totals, build_status
from dspex.schemas import JobStatus, UsageRecord, WorkerHeartbeat, decode, encode

STARTED = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def beat(
    worker_id: str, *, calls: int = 0, final: bool = False, started: datetime = STARTED
) -> WorkerHeartbeat:
    unreported = {"job-1": UsageRecord(lm_calls=calls, prompt_tokens=10 * calls)} if calls else {}
    return WorkerHeartbeat(
        worker_id=worker_id,
        kind="predict",
        host="h",
        pid=1,
        started_at=started,
        unreported=unreported,
        final=final,
    )


def run(watch: DeathWatch, clock: Clock, seconds: float, speakers: list[WorkerHeartbeat]) -> list[str]:
    """``seconds`` of time in 1 s steps, each speaker heard every step; the dead found on the way."""
    found: list[str] = []
    for _ in range(int(seconds)):
        clock.now += 1.0
        for speaker in speakers:
            watch.hear(speaker)
        found += [b.worker_id for b in watch.verdicts()[0]]
    return found


def test_a_silent_predictor_is_dead_once_others_were_heard_all_along() -> None:
    clock = Clock()
    watch = DeathWatch(dead_after=10.0, gap=6.0, clock=clock)
    victim, witness = beat("p1", calls=3), beat("agg")
    run(watch, clock, 3, [victim, witness])
    assert run(watch, clock, 9, [witness]) == []  # silent 9 s: not yet
    assert run(watch, clock, 3, [witness]) == ["p1"]
    assert run(watch, clock, 20, [witness]) == []  # declared once


def test_a_broker_outage_judges_nobody_and_silence_counts_from_when_heartbeats_flow_again() -> None:
    clock = Clock()
    watch = DeathWatch(dead_after=10.0, gap=6.0, clock=clock)
    victim, witness = beat("p1", calls=3), beat("agg")
    run(watch, clock, 3, [victim, witness])
    clock.now += 60.0  # nothing heard from anyone: the broker was gone
    assert watch.verdicts() == ([], [])
    # Back: the witness is heard at once, the predictor reconnects 8 s later (within dead_after).
    assert run(watch, clock, 8, [witness]) == []
    assert run(watch, clock, 30, [victim, witness]) == []


def test_nobody_is_judged_while_nothing_is_heard() -> None:
    clock = Clock()
    watch = DeathWatch(dead_after=10.0, gap=6.0, clock=clock)
    run(watch, clock, 2, [beat("p1", calls=1), beat("agg")])
    clock.now += 7.0
    assert watch.verdicts() == ([], [])


def test_a_final_heartbeat_is_a_worker_that_stopped_in_order() -> None:
    clock = Clock()
    watch = DeathWatch(dead_after=10.0, gap=6.0, clock=clock)
    run(watch, clock, 2, [beat("p1", calls=2, final=True), beat("agg")])
    assert run(watch, clock, 30, [beat("agg")]) == []


def test_a_worker_taken_for_dead_that_speaks_again_is_taken_back() -> None:
    clock = Clock()
    watch = DeathWatch(dead_after=10.0, gap=6.0, clock=clock)
    victim, witness = beat("p1", calls=3), beat("agg")
    run(watch, clock, 2, [victim, witness])
    assert run(watch, clock, 12, [witness]) == ["p1"]
    watch.hear(victim)
    assert watch.verdicts()[1] == [death_key(victim)]
    # A new run under the same id is another worker: the old one stays dead.
    restarted = beat("p1", calls=1, started=STARTED + timedelta(hours=1))
    run(watch, clock, 12, [witness])
    watch.hear(restarted)
    assert watch.verdicts()[1] == []


def test_what_dead_workers_left_is_set_once_summed_apart_from_usage_and_taken_back() -> None:
    meta = JobMeta("job-1", 0, STARTED.isoformat(), known=True, num_examples=4, candidate_ids=["c"])
    left = UsageRecord(lm_calls=3, prompt_tokens=30, cost_usd=0.25)
    assert record_unreported(meta, "p1@t", left)
    assert not record_unreported(meta, "p1@t", left)  # heard twice (a restart, another instance)
    assert record_unreported(meta, "p2@t", UsageRecord(lm_calls=1, prompt_tokens=5))
    totals = {"c": Totals(done=2, lm_calls=2)}
    status = build_status(meta, totals, state="running", seq=1, now=STARTED)
    assert status.usage.lm_calls == 2
    assert status.usage_unreported == UsageRecord(lm_calls=4, prompt_tokens=35, cost_usd=0.25)
    assert status.unreported_note == "up to 4 LM calls not charged: a predictor died"
    assert record_unreported(meta, "p1@t", None) and record_unreported(meta, "p2@t", None)
    status = build_status(meta, totals, state="running", seq=2, now=STARTED)
    assert status.usage_unreported is None and status.unreported_note is None


def test_a_terminal_status_is_restated_with_only_its_unreported_usage_changed() -> None:
    meta = JobMeta("job-1", 0, STARTED.isoformat(), known=True, num_examples=2, candidate_ids=["c"])
    clock = StatusClock(lambda: STARTED + timedelta(seconds=30))
    final = build_status(meta, {"c": Totals(done=2, lm_calls=5)}, state="completed", seq=7, now=STARTED)
    meta.final = encode(final).decode()
    record_unreported(meta, "p1@t", UsageRecord(lm_calls=1))
    again = decode(restate_unreported(meta, clock), JobStatus)
    assert again.usage_unreported == UsageRecord(lm_calls=1)
    assert again.unreported_note == "up to 1 LM call not charged: a predictor died"
    assert again.seq > final.seq
    same = {"usage_unreported", "seq", "updated_at"}
    assert again.model_dump(exclude=same) == final.model_dump(exclude=same)
    assert meta.final == encode(again).decode()


def test_a_status_from_an_older_writer_has_no_unreported_usage() -> None:
    old = encode(JobStatus(job_id="j", state="running", total_tasks=1)).replace(
        b',"usage_unreported":null', b""
    )
    assert b"usage_unreported" not in old
    assert decode(old, JobStatus).usage_unreported is None
