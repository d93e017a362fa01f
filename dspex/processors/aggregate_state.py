"""The aggregator's state and its transitions, with no Kafka and no faust in sight.

The aggregator keeps these changelog-backed tables (see :mod:`dspex.processors.aggregator`):

``chunks``  key ``f"{job_id}:{candidate_id}:{chunk}"`` -> :class:`ChunkState` as a JSON object:
            which of 1,024 example indices have been counted (a 128-byte bitmap, base64) AND the
            sums of exactly those examples (count, errors, score sum, usage, first systemic error).
``jobs``    key ``job_id`` -> :class:`JobMeta`: what the job asked for (total, candidates, limits),
            a cancellation, and once terminal the final JobStatus (frozen but for its usage).
``positions`` key ``f"{topic}:{partition}"`` of a source partition (scores, jobs) -> the next
            offset to apply (:mod:`dspex.processors.aggregate_resync`).

Why the sums live beside the bitmap instead of in a per-candidate totals key: a table update is
one changelog record per key, and a crash can persist some records of a batch and not others. A
bitmap persisted without its totals would make the re-consumed score look like a duplicate and
lose it; totals persisted without the bitmap would count it twice. One key holding both is one
record: always self-consistent. Candidate totals are the sum over a candidate's chunks (about
100 small values for a 100,000-example candidate).

Exact sums: scores and costs are floats on the wire; each is converted exactly to a
``fractions.Fraction`` and summed exactly, stored as ``"num/den"``. Integer scaling would round
arbitrary floats (an F1 of 2/3), ``math.fsum`` cannot be persisted incrementally; a Fraction
sum of floats is exact in any order, and ``float()`` of it is the correctly rounded sum, the same
bits ``math.fsum`` gives for the same scores, so the client's local and distributed scores agree.
Tokens, calls and cache hits are plain integers.

Rules: the first score per (job, candidate, example index) wins; later ones change nothing,
except usage: a task run again after a redelivery or rebalance made LM calls of its own, so the
usage of every distinct (task, ``attempt_id``) is charged once. Each chunk keeps, beside its bitmap
and in the same value, a 4-byte fingerprint of the counted attempt per index (``attempts``) and the
fingerprints of later attempts (``repeats``): a record sent or read twice is recognised, a real
repeat is added. Records without an attempt id (older writers, dead letters) add usage only when
first. A run that ended with no result (its handler cancelled by a rebalance or a stop) is reported
by a :class:`~dspex.schemas.UsageReport`: its usage is charged the same way, once per attempt id,
and it counts no example.

Late attempts: a job's chunks are kept ``LATE_USAGE_WINDOW_S`` after its terminal status, so that
attempts arriving after the end (tasks redelivered after an outage, runs cut short by the end
itself) are still recognised and charged; each such charge sends the terminal status again with
only its usage (and ``seq``, ``updated_at``) changed: state, counts, scores and reason stay as
decided. After the window the chunks are dropped and later records change nothing. A predictor
killed (kill -9) leaves the calls its running tasks had answered unreported: the aggregator learns
them from its heartbeats (:mod:`dspex.processors.aggregate_deaths`) and keeps them per dead worker
in ``JobMeta.unreported``, shown as the status's ``usage_unreported``, apart from ``usage``.
Scores that arrive before their job are aggregated anyway; a status exists once the job is known.
A job fails on a systemic error (reason: that error's message), on more than ``max_errors``
failed examples, or on a cost above ``max_cost_usd`` (checked in that order: a bad key with
``max_errors`` set is ``systemic``, never a limit); it is cancelled by a Cancel, and fails at once
when its record on the jobs topic does not decode or its submitter says tasks are missing; it
completes when every candidate has every example. Each end other than completing names its
``stop_reason`` in the status, so readers never guess it from the counts. Once terminal, nothing
but its usage changes any more.

Purge: a :class:`~dspex.schemas.PurgeJob` (``dspex purge``) replaces the job's value by a marker
(``JobMeta.purged_until``), drops its chunks and has its status tombstoned; for
``LATE_USAGE_WINDOW_S`` every later record of the job (a late attempt, a Cancel, the job record
read again) is ignored, so nothing writes its status back. The marker is then deleted.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any, Literal, Protocol

from dspex.schemas import (
    Cancel,
    CandidateAggregate,
    EvalJob,
    JobState,
    JobStatus,
    PurgeJob,
    ScoreRecord,
    StopReason,
    UsageRecord,
    UsageReport,
    decode,
    encode,
    over_cost_budget,
    utc_now,
)

__all__ = [
    "CHUNK_SIZE",
    "LATE_USAGE_WINDOW_S",
    "AggregateBatch",
    "BatchResult",
    "ChunkAdd",
    "ChunkState",
    "Decision",
    "JobMeta",
    "ScoreOutcome",
    "StatusClock",
    "Totals",
    "attempt_fingerprint",
    "build_status",
    "chunk_key",
    "decide",
    "invalid_job_id",
    "job_chunk_keys",
    "job_totals",
    "open_state",
    "status_fingerprint",
    "unreported_usage",
]

CHUNK_SIZE = 1024
"""Example indices per bitmap key: 128 bytes of bits, about 200 bytes of JSON per key."""
_CHUNK_BYTES = CHUNK_SIZE // 8
LATE_USAGE_WINDOW_S = 600.0
"""How long a terminal job's chunks are kept so that attempts arriving after its end are charged:
longer than a broker outage and a rebalance take to bring redelivered tasks back."""

ScoreOutcome = Literal["counted", "duplicate", "ignored", "charged"]
"""``charged``: only the record's usage was added (a usage report, or an attempt after the end)."""


class ReadView(Protocol):
    """What a batch reads a table through: a mapping's ``get`` (a faust table, or a dict in tests)."""

    def get(self, key: str, /) -> Any: ...


def chunk_key(job_id: str, candidate_id: str, chunk: int) -> str:
    """The ``chunks`` table key of one bitmap chunk."""
    return f"{job_id}:{candidate_id}:{chunk}"


def _frac(text: str) -> Fraction:
    return Fraction(text)


def _text(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


@dataclass
class Totals:
    """Exact sums over some examples of one candidate (one chunk, or all of them)."""

    done: int = 0
    errors: int = 0
    score_sum: Fraction = field(default_factory=Fraction)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Fraction = field(default_factory=Fraction)
    lm_calls: int = 0
    cache_hits: int = 0
    systemic: str | None = None

    def add_record(self, record: ScoreRecord) -> None:
        """Count one (first) score."""
        self.done += 1
        self.errors += record.error is not None
        self.score_sum += Fraction(record.score)
        self.add_usage(record.usage)
        if self.systemic is None and record.error is not None and record.error.systemic:
            self.systemic = record.error.message

    def add_usage(self, usage: UsageRecord) -> None:
        """Charge one attempt's LM usage (also of repeated attempts of a counted example)."""
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cost_usd += Fraction(usage.cost_usd)
        self.lm_calls += usage.lm_calls
        self.cache_hits += usage.cache_hits

    def merge(self, other: Totals) -> None:
        """Add ``other``'s sums to these."""
        self.done += other.done
        self.errors += other.errors
        self.score_sum += other.score_sum
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.lm_calls += other.lm_calls
        self.cache_hits += other.cache_hits
        self.systemic = self.systemic if self.systemic is not None else other.systemic

    def usage(self) -> UsageRecord:
        """The usage as it travels (cost rounded to the nearest float once, here)."""
        return UsageRecord(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=float(self.cost_usd),
            lm_calls=self.lm_calls,
            cache_hits=self.cache_hits,
        )

    def to_value(self) -> dict[str, Any]:
        return {
            "count": self.done,
            "errors": self.errors,
            "score_sum": _text(self.score_sum),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": _text(self.cost_usd),
            "lm_calls": self.lm_calls,
            "cache_hits": self.cache_hits,
            "systemic": self.systemic,
        }

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> Totals:
        """The sums of a stored chunk value (its bits are not decoded)."""
        return cls(
            done=int(value["count"]),
            errors=int(value["errors"]),
            score_sum=_frac(value["score_sum"]),
            prompt_tokens=int(value["prompt_tokens"]),
            completion_tokens=int(value["completion_tokens"]),
            cost_usd=_frac(value["cost_usd"]),
            lm_calls=int(value["lm_calls"]),
            cache_hits=int(value["cache_hits"]),
            systemic=value.get("systemic"),
        )


ChunkAdd = Literal["counted", "repeat", "duplicate"]
"""What adding a score to a chunk did: counted it, charged only its usage (a new attempt of a
counted example), or nothing."""


def attempt_fingerprint(attempt_id: str) -> int:
    """A 4-byte, non-zero fingerprint of an attempt id (ids of one task collide with odds 2**-32)."""
    value = int.from_bytes(hashlib.blake2b(attempt_id.encode(), digest_size=4).digest(), "big")
    return value or 1


@dataclass
class ChunkState:
    """One chunk: which of its 1,024 example indices were counted, and their sums.

    ``attempts`` (4 bytes per index, created on first need) holds the fingerprint of the counted
    record's attempt, 0 when it had none; ``repeats`` the fingerprints of later attempts by index.
    """

    bits: bytearray = field(default_factory=lambda: bytearray(_CHUNK_BYTES))
    totals: Totals = field(default_factory=Totals)
    attempts: bytearray | None = None
    repeats: dict[int, list[int]] = field(default_factory=dict)

    def add(self, offset: int, record: ScoreRecord) -> ChunkAdd:
        """Count ``record`` at ``offset`` (0..1023) unless that index was counted already; a new
        attempt of a counted index adds its usage only."""
        byte, mask = offset >> 3, 1 << (offset & 7)
        fingerprint = attempt_fingerprint(record.attempt_id) if record.attempt_id is not None else 0
        if self.bits[byte] & mask:
            if not fingerprint or fingerprint in self._seen(offset):
                return "duplicate"
            self.repeats.setdefault(offset, []).append(fingerprint)
            self.totals.add_usage(record.usage)
            return "repeat"
        self.bits[byte] |= mask
        self.totals.add_record(record)
        if fingerprint:
            self._set_first(offset, fingerprint)
        return "counted"

    def charge(self, offset: int, attempt_id: str, usage: UsageRecord) -> ChunkAdd:
        """Add the usage of an attempt at ``offset`` that counts no example (a usage report, or an
        attempt after the job's end), unless that attempt was charged already."""
        fingerprint = attempt_fingerprint(attempt_id)
        if fingerprint in self._seen(offset):
            return "duplicate"
        self.repeats.setdefault(offset, []).append(fingerprint)
        self.totals.add_usage(usage)
        return "repeat"

    def _seen(self, offset: int) -> list[int]:
        first = self._first(offset)
        return ([first] if first else []) + self.repeats.get(offset, [])

    def _first(self, offset: int) -> int:
        if self.attempts is None:
            return 0
        return int.from_bytes(self.attempts[offset * 4 : offset * 4 + 4], "big")

    def _set_first(self, offset: int, fingerprint: int) -> None:
        if self.attempts is None:
            self.attempts = bytearray(CHUNK_SIZE * 4)
        self.attempts[offset * 4 : offset * 4 + 4] = fingerprint.to_bytes(4, "big")

    def to_value(self) -> dict[str, Any]:
        """The table value: JSON-able, rewritten whole on every update."""
        value = {"bits": base64.b64encode(bytes(self.bits)).decode("ascii"), **self.totals.to_value()}
        if self.attempts is not None:
            value["attempts"] = base64.b64encode(bytes(self.attempts)).decode("ascii")
        if self.repeats:
            value["repeats"] = {str(offset): list(seen) for offset, seen in self.repeats.items()}
        return value

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | None) -> ChunkState:
        if value is None:
            return cls()
        attempts = value.get("attempts")  # absent in values written before attempt ids
        repeats = value.get("repeats") or {}
        return cls(
            bytearray(base64.b64decode(value["bits"])),
            Totals.from_value(value),
            bytearray(base64.b64decode(attempts)) if attempts else None,
            {int(offset): [int(f) for f in seen] for offset, seen in repeats.items()},
        )


@dataclass
class JobMeta:
    """What the aggregator knows about one job (the ``jobs`` table value)."""

    job_id: str
    partition: int
    started_at: str
    known: bool = False
    name: str | None = None
    parent_job_id: str | None = None
    num_examples: int = 0
    candidate_ids: list[str] = field(default_factory=list)
    max_errors: int | None = None
    max_cost_usd: float | None = None
    outcome: JobState | None = None
    reason: str | None = None
    stop_reason: StopReason | None = None  # absent in values written before stop reasons existed
    note: str | None = None  # how the job runs, for its status (an in-flight budget clamped)
    final: str | None = None  # the terminal JobStatus as sent (JSON), re-sent byte for byte
    # Epoch seconds until which a terminal job's chunks are kept to charge late attempts; None:
    # not terminal, or its chunks are gone (dropped, or by an aggregator from before late charges).
    late_until: float | None = None
    # death_key (a worker run) -> the UsageRecord (JSON) it left unreported for this job when it died
    # (dspex.processors.aggregate_deaths); set, never added to, so hearing a death twice is harmless.
    unreported: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Epoch seconds until which the job's late records are ignored after ``dspex purge`` (a
    # PurgeJob): the key then holds nothing else and is deleted once this has passed.
    purged_until: float | None = None

    @property
    def total_tasks(self) -> int:
        return len(self.candidate_ids) * self.num_examples

    @property
    def purged(self) -> bool:
        """Whether the job was purged: none of its records change anything any more."""
        return self.purged_until is not None

    def purge_over(self, now: float) -> bool:
        """Whether a purged job's key may be deleted (``now``: epoch seconds)."""
        return self.purged_until is not None and self.purged_until <= now

    def late_window_over(self, now: float) -> bool:
        """Whether the chunks of this terminal job may be dropped (``now``: epoch seconds)."""
        return self.final is not None and self.late_until is not None and self.late_until <= now

    def learn(self, job: EvalJob) -> None:
        """Take totals and limits from the job (the first EvalJob of an id wins)."""
        self.known = True
        self.name, self.num_examples, self.parent_job_id = job.name, job.num_examples, job.parent_job_id
        self.candidate_ids = list(dict.fromkeys(job.candidate_ids))
        self.max_errors, self.max_cost_usd = job.max_errors, job.max_cost_usd
        self.note = in_flight_note(job)

    def to_value(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _META_FIELDS}

    @classmethod
    def from_value(cls, job_id: str, value: Mapping[str, Any]) -> JobMeta:
        return cls(job_id=job_id, **{name: value[name] for name in _META_FIELDS if name in value})


_META_FIELDS = [name for name in JobMeta.__dataclass_fields__ if name != "job_id"]


class StatusClock:
    """Timestamps and ``seq`` numbers for statuses.

    ``seq`` is the wall clock in milliseconds, forced to increase within a process, so that it
    also keeps increasing across a restart of the aggregator (which holds no counter to resume).
    """

    def __init__(self, now: Callable[[], datetime] = utc_now) -> None:
        self._now = now
        self._last_seq = 0

    def now(self) -> datetime:
        return self._now()

    def next_seq(self, at: datetime) -> int:
        self._last_seq = max(self._last_seq + 1, int(at.timestamp() * 1000))
        return self._last_seq


def job_chunk_keys(meta: JobMeta) -> Iterator[tuple[str, str]]:
    """``(candidate_id, chunk key)`` of every chunk a known job can have."""
    chunks = -(-meta.num_examples // CHUNK_SIZE)
    for candidate_id in meta.candidate_ids:
        for chunk in range(chunks):
            yield candidate_id, chunk_key(meta.job_id, candidate_id, chunk)


def job_totals(meta: JobMeta, read: Callable[[str], Mapping[str, Any] | None]) -> dict[str, Totals]:
    """Per-candidate totals of a known job, summed over its chunks (``read`` gives a chunk value)."""
    totals = {candidate_id: Totals() for candidate_id in meta.candidate_ids}
    for candidate_id, key in job_chunk_keys(meta):
        value = read(key)
        if value is not None:
            totals[candidate_id].merge(Totals.from_value(value))
    return totals


def build_status(
    meta: JobMeta, totals: Mapping[str, Totals], *, state: JobState, seq: int, now: datetime
) -> JobStatus:
    """The JobStatus of a known job from its per-candidate totals."""
    job = Totals()
    candidates = []
    for candidate_id in meta.candidate_ids:
        mine = totals.get(candidate_id) or Totals()
        job.merge(mine)
        candidates.append(
            CandidateAggregate(
                candidate_id=candidate_id,
                total=meta.num_examples,
                done=min(mine.done, meta.num_examples),
                errors=mine.errors,
                score_sum=float(mine.score_sum),
                usage=mine.usage(),
            )
        )
    return JobStatus(
        job_id=meta.job_id,
        name=meta.name,
        parent_job_id=meta.parent_job_id,
        state=state,
        total_tasks=meta.total_tasks,
        done=sum(c.done for c in candidates),
        errors=job.errors,
        candidates=candidates,
        usage=job.usage(),
        seq=seq,
        started_at=datetime.fromisoformat(meta.started_at),
        updated_at=now,
        finished_at=now if state in ("completed", "failed", "cancelled") else None,
        reason=meta.reason if state in ("failed", "cancelled") else None,
        stop_reason=meta.stop_reason if state in ("failed", "cancelled") else None,
        note=meta.note,
        usage_unreported=unreported_usage(meta),
    )


def unreported_usage(meta: JobMeta) -> UsageRecord | None:
    """What predictors that died had answered for the job and not reported (None: none did)."""
    if not meta.unreported:
        return None
    total = Totals()
    for value in meta.unreported.values():
        total.add_usage(UsageRecord.model_validate(value))
    return total.usage()


def in_flight_note(job: EvalJob) -> str | None:
    """What the job's status says when its in-flight budget was clamped (None when it was not)."""
    asked, allowed = job.max_in_flight_asked, job.max_in_flight
    if asked is None or allowed is None or asked <= allowed:
        return None
    return f"asked for {asked} tasks in flight; the predictors allow {allowed} each: clamped to {allowed}"


def open_state(totals: Mapping[str, Totals]) -> JobState:
    """State of a job that is not terminal: running once anything was counted."""
    return "running" if any(t.done for t in totals.values()) else "pending"


@dataclass(frozen=True)
class Decision:
    """A job's terminal state, the reason in words, and the typed reason readers act on."""

    state: JobState
    reason: str | None = None
    stop_reason: StopReason | None = None


def decide(meta: JobMeta, totals: Mapping[str, Totals]) -> Decision | None:
    """The terminal state a known job has reached; None while it runs.

    The systemic cause is decided first: a job failing on a bad key also crosses ``max_errors``
    soon after, and must still fail as systemic (an error), never as a limit (partial results).
    """
    if meta.outcome is not None:  # a cancellation (or invalid job) recorded earlier
        return Decision(meta.outcome, meta.reason, meta.stop_reason or _recorded_stop(meta.outcome))
    job = Totals()
    for candidate_totals in totals.values():
        job.merge(candidate_totals)
    if job.systemic is not None:
        return Decision("failed", job.systemic, "systemic")
    if meta.max_errors is not None and job.errors > meta.max_errors:
        reason = f"{job.errors} examples failed, more than max_errors={meta.max_errors}"
        return Decision("failed", reason, "max_errors")
    # The float the status reports, compared as every reader compares it: one rule everywhere.
    if over_cost_budget(float(job.cost_usd), meta.max_cost_usd):
        reason = f"cost ${float(job.cost_usd):.6f} is over the budget max_cost_usd=${meta.max_cost_usd}"
        return Decision("failed", reason, "max_cost")
    if all(t.done >= meta.num_examples for t in totals.values()):
        return Decision("completed")
    return None


def _recorded_stop(outcome: JobState) -> StopReason | None:
    # A cancellation stored by an aggregator from before stop reasons (no stop_reason in the value).
    return "cancelled" if outcome == "cancelled" else None


@dataclass
class BatchResult:
    """What one batch changed: values to write, statuses to send, chunks to drop afterwards.

    Writes are ``key -> (partition, value)``. A terminal job's chunks stay (late attempts are
    charged against them) until the aggregator drops them once ``late_until`` has passed.
    ``dropped_chunks`` (key -> partition) are a purged job's chunks, deleted now; ``purged`` the
    jobs whose status to tombstone, after every status sent before.
    """

    jobs: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    chunks: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    statuses: list[tuple[str, bytes]] = field(default_factory=list)
    dropped_chunks: dict[str, int] = field(default_factory=dict)
    purged: list[str] = field(default_factory=list)


class AggregateBatch:
    """Apply a batch of records to a snapshot of the tables; every changed key is written once.

    batch = AggregateBatch(jobs_table, chunks_table, clock)
    batch.add_job(job, partition=3); batch.add_score(score, partition=3)
    result = batch.finish()   # writes, terminal statuses, cleanup
    """

    def __init__(self, jobs: ReadView, chunks: ReadView, clock: StatusClock) -> None:
        self._jobs_view, self._chunks_view, self._clock = jobs, chunks, clock
        self._metas: dict[str, JobMeta] = {}
        self._chunks: dict[str, ChunkState] = {}
        self._dirty_jobs: set[str] = set()
        self._dirty_chunks: dict[str, int] = {}
        self._touched: dict[str, None] = {}  # jobs to evaluate at finish, in first-seen order
        self._late: set[str] = set()  # terminal jobs charged in this batch: their status is re-sent
        self._dropped: dict[str, int] = {}  # chunks of jobs purged in this batch
        self._purged: dict[str, None] = {}

    def add_score(self, record: ScoreRecord, partition: int) -> ScoreOutcome:
        """Count a score unless it is a duplicate or out of its job's range; once the job is over,
        only charge its usage if its attempt is new (see the module docs)."""
        meta = self._meta(record.job_id, partition)
        if meta.purged:
            return "ignored"
        self._touched[meta.job_id] = None
        if meta.outcome is not None:
            return self._charge(meta, record)
        if meta.known and not _in_range(meta, record.candidate_id, record.example_index):
            return "ignored"
        chunk, offset = divmod(record.example_index, CHUNK_SIZE)
        key = chunk_key(record.job_id, record.candidate_id, chunk)
        added = self._chunk(key).add(offset, record)
        if added == "duplicate":
            return "duplicate"
        self._dirty_chunks[key] = meta.partition
        # A repeat changed only the usage: as a score it is a duplicate (the stats say so).
        return "counted" if added == "counted" else "duplicate"

    def add_usage_report(self, report: UsageReport, partition: int) -> ScoreOutcome:
        """Charge the usage of a run that ended with no result, once per attempt id."""
        meta = self._meta(report.job_id, partition)
        if meta.purged:
            return "ignored"
        self._touched[meta.job_id] = None
        return self._charge(meta, report)

    def _charge(self, meta: JobMeta, attempt: ScoreRecord | UsageReport) -> ScoreOutcome:
        """Add an attempt's usage and nothing else, unless it was charged already, has no id to
        recognise it by, is out of range, or its job's chunks are gone."""
        candidate_id, index, attempt_id = attempt.candidate_id, attempt.example_index, attempt.attempt_id
        chunks_gone = meta.final is not None and meta.late_until is None
        if attempt_id is None or chunks_gone or (meta.known and not _in_range(meta, candidate_id, index)):
            return "ignored"
        chunk, offset = divmod(index, CHUNK_SIZE)
        key = chunk_key(meta.job_id, candidate_id, chunk)
        if self._chunk(key).charge(offset, attempt_id, attempt.usage) == "duplicate":
            return "duplicate"
        self._dirty_chunks[key] = meta.partition
        if meta.final is not None:
            self._late.add(meta.job_id)
        return "charged"

    def add_job(self, job: EvalJob, partition: int) -> None:
        """Learn a job's totals and limits (a repeated EvalJob changes nothing)."""
        meta = self._meta(job.job_id, partition)
        self._touched[meta.job_id] = None
        if not meta.known and not meta.purged:
            meta.learn(job)
            self._dirty_jobs.add(meta.job_id)

    def add_cancel(self, cancel: Cancel, partition: int) -> None:
        """Cancel a job that is not over yet (known or not: it is kept for when it arrives).

        A Cancel saying the submitter could not publish every task fails the job instead
        (``tasks_missing``): it could never complete.
        """
        meta = self._meta(cancel.job_id, partition)
        self._touched[meta.job_id] = None
        if meta.outcome is not None or meta.purged:
            return
        if cancel.stop_reason == "tasks_missing":
            meta.outcome, meta.stop_reason = "failed", "tasks_missing"
            meta.reason = cancel.reason or "the submitter could not publish every task of the job"
        else:
            meta.outcome, meta.stop_reason = "cancelled", "cancelled"
            meta.reason = cancel.reason or "cancelled"
        self._dirty_jobs.add(meta.job_id)

    def add_invalid_job(self, job_id: str, partition: int, problem: str) -> None:
        """Fail a job whose record on the jobs topic does not decode (``invalid_submit``).

        Nobody can run it (the predictors cannot read it either), and without this its submitter
        would wait for a status that never comes. A job already known or over keeps its state: a
        bad duplicate of a job that was read changes nothing.
        """
        meta = self._meta(job_id, partition)
        self._touched[meta.job_id] = None
        if meta.known or meta.outcome is not None or meta.purged:
            return
        meta.known = True  # with no totals: its status says 0 tasks, failed
        meta.outcome, meta.stop_reason = "failed", "invalid_submit"
        meta.reason = f"the job's record on the jobs topic is invalid: {problem}"
        self._dirty_jobs.add(meta.job_id)

    def add_purge(self, purge: PurgeJob, partition: int) -> None:
        """Forget a purged job: its chunks are dropped, its status tombstoned, and its records are
        ignored for ``LATE_USAGE_WINDOW_S`` (a late attempt or a Cancel would otherwise send its
        terminal status again). Only the marker stays in the jobs table, until then.
        """
        meta = self._meta(purge.job_id, partition)
        for key in self._chunk_keys_of(meta):
            self._dropped[key] = meta.partition
            self._dirty_chunks.pop(key, None)
            self._chunks.pop(key, None)
        until = self._clock.now().timestamp() + LATE_USAGE_WINDOW_S
        self._metas[meta.job_id] = JobMeta(meta.job_id, meta.partition, meta.started_at, purged_until=until)
        self._dirty_jobs.add(meta.job_id)
        self._purged[meta.job_id] = None

    def _chunk_keys_of(self, meta: JobMeta) -> set[str]:
        # A known job's chunks, and those of this batch (scores of a job not known yet included).
        keys = {key for _, key in job_chunk_keys(meta)} if meta.known else self._stored_chunks_of(meta.job_id)
        return keys | {key for key in self._chunks if key.startswith(f"{meta.job_id}:")}

    def _stored_chunks_of(self, job_id: str) -> set[str]:
        """The stored chunks of a job whose record was never read (scores only): no candidate list
        names them, so they are found by key prefix, a scan of the table (for a purge only)."""
        stored = getattr(self._chunks_view, "keys", None)
        if stored is None:
            return set()
        prefix = f"{job_id}:"
        return {key for key in stored() if isinstance(key, str) and key.startswith(prefix)}

    def finish(self) -> BatchResult:
        """Decide terminal states of the jobs this batch touched and collect what to write."""
        result = BatchResult()
        for job_id in self._touched:
            self._evaluate(self._metas[job_id], result)
        result.chunks = {key: (p, self._chunks[key].to_value()) for key, p in self._dirty_chunks.items()}
        result.jobs = {j: (self._metas[j].partition, self._metas[j].to_value()) for j in self._dirty_jobs}
        result.dropped_chunks = dict(self._dropped)
        result.purged = list(self._purged)
        return result

    def _evaluate(self, meta: JobMeta, result: BatchResult) -> None:
        if meta.purged:
            return
        if meta.final is not None:  # touched again after the end: the same status once more
            if meta.job_id in self._late:
                self._restate_usage(meta)
            result.statuses.append((meta.job_id, meta.final.encode()))
            return
        if not meta.known:
            return
        totals = job_totals(meta, self._read_chunk)
        decision = decide(meta, totals)
        if decision is None:
            return
        meta.outcome, meta.reason, meta.stop_reason = decision.state, decision.reason, decision.stop_reason
        now = self._clock.now()
        status = build_status(meta, totals, state=decision.state, seq=self._clock.next_seq(now), now=now)
        meta.final = encode(status).decode()
        meta.late_until = now.timestamp() + LATE_USAGE_WINDOW_S
        self._dirty_jobs.add(meta.job_id)
        result.statuses.append((meta.job_id, meta.final.encode()))

    def _restate_usage(self, meta: JobMeta) -> None:
        """The terminal status again with the usage its chunks hold now; nothing else changes."""
        assert meta.final is not None
        status = decode(meta.final.encode(), JobStatus)
        totals = job_totals(meta, self._read_chunk)
        job = Totals()
        for candidate_totals in totals.values():
            job.merge(candidate_totals)
        candidates = [
            c.model_copy(update={"usage": totals[c.candidate_id].usage()}) if c.candidate_id in totals else c
            for c in status.candidates
        ]
        now = self._clock.now()
        changes = {"usage": job.usage(), "candidates": candidates, "seq": self._clock.next_seq(now)}
        meta.final = encode(status.model_copy(update={**changes, "updated_at": now})).decode()
        self._dirty_jobs.add(meta.job_id)

    def _meta(self, job_id: str, partition: int) -> JobMeta:
        meta = self._metas.get(job_id)
        if meta is None:
            stored = self._jobs_view.get(job_id)
            if stored is None:
                meta = JobMeta(job_id, partition, self._clock.now().isoformat())
                self._dirty_jobs.add(job_id)
            else:
                meta = JobMeta.from_value(job_id, stored)
            self._metas[job_id] = meta
        if meta.partition != partition:  # a writer with another partitioner: follow the data
            meta.partition = partition
            self._dirty_jobs.add(job_id)
        return meta

    def _chunk(self, key: str) -> ChunkState:
        state = self._chunks.get(key)
        if state is None:
            state = self._chunks[key] = ChunkState.from_value(self._chunks_view.get(key))
        return state

    def _read_chunk(self, key: str) -> Mapping[str, Any] | None:
        if key in self._chunks:
            return self._chunks[key].totals.to_value()
        value = self._chunks_view.get(key)
        return value if value is None else dict(value)


def _in_range(meta: JobMeta, candidate_id: str, index: int) -> bool:
    return candidate_id in meta.candidate_ids and index < meta.num_examples


def invalid_job_id(key: bytes | None, value: bytes | None) -> str | None:
    """The job to fail as ``invalid_submit`` for a jobs-topic record that did not decode: its key,
    unless the record says it is an optimization (the optimizer coordinator's), a Cancel or a
    PurgeJob (which start nothing), or has no usable key."""
    try:
        job_id = key.decode() if key else ""
    except UnicodeDecodeError:
        return None
    try:
        data = json.loads(value) if value else None
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("kind") in ("optimize", "cancel", "purge"):
        return None
    return job_id or None


def status_fingerprint(status: JobStatus) -> str:
    """What a status says apart from its clock fields: equal fingerprints mean nothing changed."""
    data = status.model_dump(mode="json", exclude={"seq", "updated_at"})
    return json.dumps(data, sort_keys=True)
