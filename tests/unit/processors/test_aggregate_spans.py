"""The aggregator's span per score record: a child of the scorer's span named by the record's
``traceparent`` header, kept when the example is sampled or failed, absent otherwise.

Records go through the aggregator's own ``_apply`` (the code path of its batches) with the tables
written as ``process`` writes them, minus the broker; spans go to the SDK's in-memory exporter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from dspex.observability import tracing
from dspex.observability.tracing import TracingSettings
from dspex.processors.aggregate_spans import (
    AGGREGATE_SPAN,
    JOB_AGGREGATE_SPAN,
    JOB_ENDED_EVENT,
    batch_spans,
    start_aggregator_tracing,
)
from dspex.processors.aggregate_state import AggregateBatch, StatusClock
from dspex.processors.aggregator import Aggregator
from dspex.processors.aggregator_options import AggregatorOptions
from dspex.schemas import ErrorInfo, EvalJob, MetricSpec, ScoreRecord, encode
from dspex.streams.config import KafkaSettings

PREFIX = "dspex."


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Event:
    message: Message
    value: bytes


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory: pytest.TempPathFactory) -> Aggregator:
    # built, never run: nothing here touches a broker
    options = AggregatorOptions(prefix=PREFIX, data_dir=tmp_path_factory.mktemp("agg"), metrics=False)
    return Aggregator(KafkaSettings(bootstrap_servers="127.0.0.1:9"), options, partitions=1)


@pytest.fixture
def exported(aggregator: Aggregator) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.enable(TracingSettings(exporter=exporter, sample_ratio=0.0))  # the header decides
    aggregator.jobs.data.clear()
    aggregator.chunks.data.clear()
    yield exporter
    tracing.disable()


def traceparent(trace_id: int, span_id: int, sampled: bool) -> bytes:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}".encode()


def job(n: int) -> Event:
    value = EvalJob(
        job_id="j1", candidate_ids=["c1"], metric=MetricSpec(name="exact_match:answer"), num_examples=n
    )
    return Event(Message(PREFIX + "jobs", 0, 0, []), encode(value))


def score(index: int, header: bytes | None, failed: bool = False, **extra: Any) -> Event:
    record = ScoreRecord(
        job_id="j1",
        candidate_id="c1",
        example_index=index,
        task_id=f"t{index}",
        score=0.0 if failed else 1.0,
        error=ErrorInfo(type="AdapterParseError", message="no answer field") if failed else None,
        **extra,
    )
    headers = [("traceparent", header)] if header is not None else []
    return Event(Message(PREFIX + "scores", 0, index, headers), encode(record))


def run_batch(aggregator: Aggregator, *events: Event) -> None:
    """One batch as ``Aggregator.process`` runs it, the broker writes left out."""
    batch = AggregateBatch(aggregator.jobs.data, aggregator.chunks.data, StatusClock())
    aggregator._spans = batch_spans(aggregator.jobs.data, aggregator.chunks.data)
    for event in events:
        aggregator._apply(batch, event)  # type: ignore[arg-type]  # the fields _apply reads
    result = batch.finish()
    for table, writes in ((aggregator.jobs, result.jobs), (aggregator.chunks, result.chunks)):
        for key, (_, value) in writes.items():
            table.data[key] = value
    if aggregator._spans is not None:
        aggregator._spans.end()


def aggregate_spans(exporter: InMemorySpanExporter) -> dict[int, ReadableSpan]:
    assert tracing.flush(5.0)
    spans = [span for span in exporter.get_finished_spans() if span.name == AGGREGATE_SPAN]
    return {int(str(span.attributes["dspex.example_index"])): span for span in spans}  # type: ignore[index]


def test_each_sampled_score_gets_a_span_under_the_scorers_span(
    aggregator: Aggregator, exported: InMemorySpanExporter
) -> None:
    run_batch(
        aggregator,
        job(2),
        score(0, traceparent(0xA0, 0xB0, sampled=True)),
        score(1, traceparent(0xA1, 0xB1, sampled=True)),
    )
    spans = aggregate_spans(exported)
    assert set(spans) == {0, 1}
    for index, span in spans.items():
        assert span.context is not None and span.parent is not None
        assert span.context.trace_id == 0xA0 + index  # the example's trace, across the hop
        assert span.parent.span_id == 0xB0 + index and span.parent.is_remote  # the scorer's span
        assert span.kind is SpanKind.CONSUMER
        attributes = span.attributes or {}
        assert attributes["dspex.aggregate.outcome"] == "counted"
        assert (
            attributes["dspex.aggregate.duplicate"] is False and attributes["dspex.aggregate.late"] is False
        )
        assert (attributes["dspex.job_id"], attributes["dspex.task_id"]) == ("j1", f"t{index}")
        # the job's counts once the batch is written: both examples counted, the job complete
        assert (attributes["dspex.job.done"], attributes["dspex.job.total_tasks"]) == (2, 2)
        assert attributes["dspex.job.state"] == "completed"
    # the job ended in this batch: the last record it counted says so
    assert [event.name for event in spans[1].events] == [JOB_ENDED_EVENT]
    assert not spans[0].events


def test_a_record_read_again_is_a_late_duplicate(
    aggregator: Aggregator, exported: InMemorySpanExporter
) -> None:
    header = traceparent(0xC0, 0xD0, sampled=True)
    run_batch(aggregator, job(1), score(0, header, attempt_id="a1"))
    run_batch(aggregator, score(0, header, attempt_id="a1"))  # redelivered after the job ended
    assert tracing.flush(5.0)
    spans = [s for s in exported.get_finished_spans() if s.name == AGGREGATE_SPAN]
    assert len(spans) == 2
    again = spans[1].attributes or {}
    assert again["dspex.aggregate.outcome"] == "duplicate" and again["dspex.aggregate.duplicate"] is True
    assert again["dspex.aggregate.late"] is True and again["dspex.job.done"] == 1
    assert not spans[1].events  # the job ended before: no second end


def test_unsampled_examples_get_no_span_unless_they_failed(
    aggregator: Aggregator, exported: InMemorySpanExporter
) -> None:
    run_batch(
        aggregator,
        job(4),
        score(0, traceparent(0xE0, 0xF0, sampled=False)),
        score(1, traceparent(0xE1, 0xF1, sampled=False), failed=True),
        score(2, None),  # its example was not traced
        score(3, b"not a traceparent", failed=True),
    )
    spans = aggregate_spans(exported)
    assert set(spans) == {1}  # kept by the tail keep: the example failed
    kept = spans[1]
    assert kept.context is not None and kept.parent is not None
    assert not kept.context.trace_flags.sampled  # the example's own (unsampled) trace, not a new one
    assert (kept.context.trace_id, kept.parent.span_id) == (0xE1, 0xF1)
    assert kept.status.status_code is StatusCode.ERROR
    assert "AdapterParseError" in (kept.status.description or "")


def test_no_span_work_when_tracing_is_off(aggregator: Aggregator) -> None:
    aggregator.jobs.data.clear()
    aggregator.chunks.data.clear()
    assert tracing.active() is None
    assert batch_spans(aggregator.jobs.data, aggregator.chunks.data) is None
    run_batch(aggregator, job(1), score(0, traceparent(0x1, 0x2, sampled=True)))
    assert aggregator._spans is None and aggregator.stats["counted"] >= 1


def test_tracing_starts_from_the_option_or_the_otel_variable(tmp_path: Path) -> None:
    try:
        assert not start_aggregator_tracing(None, env={})
        assert tracing.active() is None
        assert start_aggregator_tracing(None, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
        active = tracing.active()
        assert active is not None and active.settings.service_name == "dspex-aggregate"
        assert start_aggregator_tracing("http://127.0.0.1:8", env={"OTEL_SERVICE_NAME": "agg-east"})
        active = tracing.active()
        assert active is not None and active.settings.endpoint == "http://127.0.0.1:8"
        assert active.settings.service_name == "agg-east"
    finally:
        tracing.disable()


def job_with_span(n: int, header: bytes) -> Event:
    """The job record as a client publishes it inside its ``dspex.job`` span."""
    event = job(n)
    return Event(Message(PREFIX + "jobs", 0, 0, [("traceparent", header)]), event.value)


def test_the_jobs_end_is_a_span_under_the_clients_job_span_whatever_the_sampling(
    aggregator: Aggregator, exported: InMemorySpanExporter
) -> None:
    run_batch(
        aggregator,
        job_with_span(2, traceparent(0x10B, 0x10C, sampled=True)),
        score(0, traceparent(0xA0, 0xB0, sampled=False)),  # the examples' traces are not kept
    )
    assert tracing.flush(5.0)
    assert not [s for s in exported.get_finished_spans() if s.name == JOB_AGGREGATE_SPAN]  # running
    run_batch(aggregator, score(1, traceparent(0xA1, 0xB1, sampled=False)))
    run_batch(aggregator, score(1, traceparent(0xA1, 0xB1, sampled=False)))  # late: no second end
    assert tracing.flush(5.0)
    [span] = [s for s in exported.get_finished_spans() if s.name == JOB_AGGREGATE_SPAN]
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == 0x10B and span.parent.span_id == 0x10C and span.parent.is_remote
    attributes = span.attributes or {}
    assert attributes["dspex.job_id"] == "j1" and attributes["dspex.job.state"] == "completed"
    assert (attributes["dspex.job.done"], attributes["dspex.job.total_tasks"]) == (2, 2)
    assert [event.name for event in span.events] == [JOB_ENDED_EVENT]
    assert span.start_time is not None and span.end_time is not None and span.start_time < span.end_time
    assert not aggregate_spans(exported)  # unsampled examples: no span of theirs


def test_a_job_record_without_a_span_gets_no_job_span(
    aggregator: Aggregator, exported: InMemorySpanExporter
) -> None:
    run_batch(aggregator, job(1), score(0, traceparent(0xA0, 0xB0, sampled=True)))
    assert tracing.flush(5.0)
    assert not [s for s in exported.get_finished_spans() if s.name == JOB_AGGREGATE_SPAN]
    assert set(aggregate_spans(exported)) == {0}
