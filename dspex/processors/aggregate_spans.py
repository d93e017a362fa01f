"""The aggregator's part of an example's trace: a span for each score record it folds into a job.

A score record carries the ``traceparent`` of the scorer's span (``dspex.score``); the aggregator
continues that trace with a ``dspex.aggregate`` span, its child, saying what the record did to its
job (``dspex.aggregate.outcome``: counted, duplicate, ignored, or charged as a late attempt;
``dspex.aggregate.duplicate``; ``dspex.aggregate.late``: its job had ended before the record's
batch) and the job's counts once that batch is on the broker (``dspex.job.done`` / ``errors`` /
``total_tasks`` / ``state``). The span opens when the record is applied and ends when the batch's
writes are durable: its length is how long the example waited to be counted. The record whose batch
ended its job carries a ``dspex.job.ended`` event (state, stop reason).

Sampling follows the example: the header's flag decides. An unsampled example gets no span at all,
except a failed one (its score carries an error): that span is marked failed like the scorer's and
exported by the tail keep (:mod:`dspex.observability.tracing.provider`), which the scorer applies
to its own span of the same example, so the kept trace is whole. A record with no ``traceparent``
(its example was not traced, or the aggregator's own dead-letter score) gets no span: the
aggregator starts no trace of its own.

The job has a span here too: a job record whose headers carry the ``traceparent`` of the client's
``dspex.job`` span (the job's submission) is remembered when read, and when a batch ends the job
a ``dspex.aggregate.job`` span, child of the client's, covers the time from that record's reading
to the end, with the job's counts and the ``dspex.job.ended`` event. So the client's job links to
the aggregator as each example's trace does, whatever the examples' sampling. What is remembered
lives in this process only (at most :data:`MAX_JOBS_REMEMBERED` jobs): a job whose record an
aggregator read before it restarted gets no job span.

When tracing is off the aggregator holds no :class:`BatchSpans` and does no span work at all.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dspex.observability.tracing import Tracing, TracingSettings, active, enable
from dspex.processors.aggregate_state import JobMeta, ScoreOutcome, job_totals, open_state
from dspex.schemas import ScoreRecord
from dspex.schemas.headers import traceparent_from_headers

__all__ = [
    "AGGREGATE_SPAN",
    "JOB_AGGREGATE_SPAN",
    "JOB_ENDED_EVENT",
    "BatchSpans",
    "batch_spans",
    "start_aggregator_tracing",
]

AGGREGATE_SPAN: Final = "dspex.aggregate"
JOB_AGGREGATE_SPAN: Final = "dspex.aggregate.job"
MAX_JOBS_REMEMBERED: Final = 10_000
JOB_ENDED_EVENT: Final = "dspex.job.ended"
SERVICE_NAME: Final = "dspex-aggregate"

_IDS: Final = (
    ("dspex.job_id", "job_id"),
    ("dspex.candidate_id", "candidate_id"),
    ("dspex.example_index", "example_index"),
    ("dspex.task_id", "task_id"),
)


def start_aggregator_tracing(endpoint: str | None, env: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on in this aggregator process when ``endpoint`` (``--otlp-endpoint``) or
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` names a receiver; whether it is on. Service ``dspex-aggregate``
    unless ``OTEL_SERVICE_NAME`` names one. A bad endpoint is a ConfigurationError."""
    environ = os.environ if env is None else env
    where = endpoint or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    if where is None:
        return False
    service = environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME
    return enable(TracingSettings(endpoint=where, service_name=service)) is not None


def batch_spans(jobs: Mapping[str, Any], chunks: Mapping[str, Any]) -> BatchSpans | None:
    """The spans of one aggregator batch, read against the ``jobs`` and ``chunks`` tables' data;
    None when tracing is off."""
    tracing = active()
    return None if tracing is None else BatchSpans(tracing, jobs, chunks)


@dataclass(frozen=True)
class _Folded:
    parent: Any  # the scorer's span, remote
    attributes: dict[str, Any]
    started: int  # epoch ns
    failure: str | None
    late: bool
    counted: bool


# job id -> (the client's job span as a traceparent, when its record was read in epoch ns), for
# the jobs whose end this aggregator has not spanned yet; oldest dropped first
_JOB_PARENTS: OrderedDict[str, tuple[str, int]] = OrderedDict()


class BatchSpans:
    """The ``dspex.aggregate`` spans of the records one batch applied, made when the batch ends
    (with the time each record was applied as its start): every attribute is set in one go."""

    def __init__(self, tracing: Tracing, jobs: Mapping[str, Any], chunks: Mapping[str, Any]) -> None:
        self._tracing, self._jobs, self._chunks = tracing, jobs, chunks
        self._folded: list[_Folded] = []
        self._touched: dict[str, bool] = {}  # jobs with a remembered span: ended before the batch?

    def job_read(self, message: Any, job: Any) -> None:
        """The job record ``job`` was read from ``message``: remember the client's job span its
        headers name, the parent of the span of the job's end."""
        traceparent = traceparent_from_headers(_headers(message))
        if traceparent is None or _remote_parent(traceparent) is None:
            return
        _JOB_PARENTS[job.job_id] = (traceparent, time.time_ns())
        _JOB_PARENTS.move_to_end(job.job_id)
        while len(_JOB_PARENTS) > MAX_JOBS_REMEMBERED:
            _JOB_PARENTS.popitem(last=False)

    def folded(self, message: Any, record: ScoreRecord, outcome: ScoreOutcome) -> None:
        """``record`` (read from ``message``) was applied with ``outcome``: it gets a span if its
        example's trace is kept (sampled, or this example failed)."""
        if record.job_id in _JOB_PARENTS and record.job_id not in self._touched:
            stored = self._jobs.get(record.job_id)
            self._touched[record.job_id] = stored is not None and stored.get("outcome") is not None
        traceparent = traceparent_from_headers(_headers(message))
        if traceparent is None:
            return
        error = record.error
        if error is None and not _sampled(traceparent):
            return  # the common case at the default ratio: one header read and nothing else
        parent = _remote_parent(traceparent)
        if parent is None:
            return
        stored = self._jobs.get(record.job_id)
        late = stored is not None and stored.get("outcome") is not None  # ended before this batch
        attributes: dict[str, Any] = {
            "openinference.span.kind": "CHAIN",
            **{name: getattr(record, field) for name, field in _IDS},
            "dspex.aggregate.outcome": outcome,
            "dspex.aggregate.duplicate": outcome == "duplicate",
            "dspex.aggregate.late": late,
            "dspex.score": record.score,
        }
        # a failed example is kept at any ratio, as the scorer keeps its span of it
        failure = None if error is None else f"{error.type}: {error.message}"
        self._folded.append(_Folded(parent, attributes, time.time_ns(), failure, late, outcome == "counted"))

    def end(self) -> None:
        """The batch's writes are on the broker: each record's span, with its job's counts now."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        counts = {job_id: _job_counts(job_id, self._jobs, self._chunks) for job_id in self._jobs_seen()}
        ender = self._enders(counts)
        recorder = self._tracing.recorder
        for index, folded in enumerate(self._folded):
            job = counts[folded.attributes["dspex.job_id"]]
            attributes = folded.attributes if job is None else {**folded.attributes, **job}
            span = recorder.start(
                AGGREGATE_SPAN,
                context=folded.parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                start_time=folded.started,
            )
            if folded.failure is not None:
                span.set_status(Status(StatusCode.ERROR, folded.failure))
            if job is not None and index in ender:
                span.add_event(JOB_ENDED_EVENT, _ended(job))
            span.end()
        self._folded = []
        self._end_jobs()

    def _end_jobs(self) -> None:
        """A ``dspex.aggregate.job`` span for each job this batch ended whose client's span is
        remembered (under it, from its record's reading to now); a job already ended is forgotten."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        for job_id, ended_before in self._touched.items():
            counts = None if ended_before else _job_counts(job_id, self._jobs, self._chunks)
            if not ended_before and (counts is None or not counts["dspex.job.terminal"]):
                continue  # still running: its span waits for a later batch
            remembered = _JOB_PARENTS.pop(job_id, None)
            if counts is None or remembered is None:
                continue
            parent = _remote_parent(remembered[0])
            attributes = {"openinference.span.kind": "CHAIN", "dspex.job_id": job_id, **counts}
            span = self._tracing.recorder.start(
                JOB_AGGREGATE_SPAN, context=parent, kind=SpanKind.CONSUMER, attributes=attributes,
                start_time=remembered[1],
            )  # fmt: skip
            span.add_event(JOB_ENDED_EVENT, _ended(counts))
            if counts["dspex.job.state"] == "failed":
                span.set_status(Status(StatusCode.ERROR, str(counts.get("dspex.job.stop_reason", "failed"))))
            span.end()
        self._touched = {}

    def _jobs_seen(self) -> dict[str, None]:
        return {folded.attributes["dspex.job_id"]: None for folded in self._folded}

    def _enders(self, counts: Mapping[str, dict[str, Any] | None]) -> set[int]:
        """Which span takes a job's end: the last record this batch counted for a job that ended
        in it (a job ended before the batch shows as ``late`` on its records instead)."""
        last: dict[str, int] = {}
        for index, folded in enumerate(self._folded):
            job_id = folded.attributes["dspex.job_id"]
            found = counts[job_id]
            if folded.counted and not folded.late and found is not None and found["dspex.job.terminal"]:
                last[job_id] = index
        return set(last.values())


def _headers(message: Any) -> Any:
    headers = getattr(message, "headers", None)
    try:
        return headers() if callable(headers) else headers
    except Exception:  # a broken message: no parent, no span
        return None


def _sampled(traceparent: str) -> bool:
    # version-traceid-spanid-flags: the last two hex digits, bit 0 is "sampled"
    try:
        return bool(int(traceparent[-2:], 16) & 1)
    except ValueError:
        return False


def _remote_parent(traceparent: str) -> Any:
    """The OpenTelemetry context of the remote span a W3C ``traceparent`` names; None when it is
    not valid (a span under it would start a trace of the aggregator's own)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan

    from dspex.observability.tracing.provider import remote_span_context

    parent = remote_span_context(traceparent)
    if parent is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _job_counts(job_id: str, jobs: Mapping[str, Any], chunks: Mapping[str, Any]) -> dict[str, Any] | None:
    """The job's counts as the tables hold them now (None: purged, or its job record not read yet)."""
    stored = jobs.get(job_id)
    if not stored or not stored.get("known") or stored.get("purged_until") is not None:
        return None
    meta = JobMeta.from_value(job_id, stored)
    if meta.final is not None:  # terminal: its status as sent (its chunks may be gone already)
        final = json.loads(meta.final)
        done, errors, state = int(final["done"]), int(final["errors"]), str(final["state"])
    else:
        totals = job_totals(meta, chunks.get)
        done = sum(min(t.done, meta.num_examples) for t in totals.values())
        errors = sum(t.errors for t in totals.values())
        state = meta.outcome or open_state(totals)
    counts: dict[str, Any] = {
        "dspex.job.done": done,
        "dspex.job.errors": errors,
        "dspex.job.total_tasks": meta.total_tasks,
        "dspex.job.state": state,
        "dspex.job.terminal": meta.final is not None,
    }
    if meta.stop_reason is not None:
        counts["dspex.job.stop_reason"] = meta.stop_reason
    return counts


def _ended(counts: Mapping[str, Any]) -> dict[str, Any]:
    ended = {name: counts[f"dspex.job.{name}"] for name in ("state", "done", "errors")}
    if "dspex.job.stop_reason" in counts:
        ended["stop_reason"] = counts["dspex.job.stop_reason"]
    return ended
