"""A receiver that fails or never answers: after a failed export the exporter backs off (batches due
meanwhile are dropped without being encoded or sent, counted as export errors, logged once a
minute), and flushing or shutting tracing down waits at most its timeout."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import dspex.observability.tracing.provider as provider_module
from dspex.observability.tracing.provider import (
    BACKOFF_FIRST_S,
    BACKOFF_MOST_S,
    EXPORT_ERRORS,
    CountedExporter,
    build_provider,
)
from dspex.observability.tracing.settings import TracingSettings, resolve
from dspex.testing.listener import LoopbackListener


class Scripted(SpanExporter):
    """Answers each export with the next result it is given; counts the batches it was handed."""

    def __init__(self, *results: SpanExportResult) -> None:
        self.results = list(results)
        self.batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches += 1
        return self.results.pop(0)


class Stuck(SpanExporter):
    """Takes a batch and does not return until released (a receiver that never answers)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        return SpanExportResult.FAILURE


def _errors() -> float:
    return float(EXPORT_ERRORS._value.get())


def _spans(count: int) -> list[ReadableSpan]:
    return [ReadableSpan(name="span") for _ in range(count)]


FAILURE, SUCCESS = SpanExportResult.FAILURE, SpanExportResult.SUCCESS


def test_after_a_failed_export_batches_are_dropped_unsent_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = Scripted(FAILURE, SUCCESS)
    exporter = CountedExporter(inner, "the receiver")
    errors = _errors()
    with caplog.at_level(logging.WARNING):
        assert exporter.export(_spans(3)) is FAILURE
        for _ in range(5):  # within the back-off: not handed to the receiver's exporter at all
            assert exporter.export(_spans(3)) is FAILURE
    assert inner.batches == 1
    assert _errors() - errors == 6  # every batch that was not exported is counted
    assert len([r for r in caplog.records if "could not export" in r.getMessage()]) == 1
    exporter.resume_at = 0.0  # the back-off is over
    assert exporter.export(_spans(3)) is SUCCESS
    assert inner.batches == 2


def test_the_back_off_doubles_per_failure_up_to_a_minute_and_ends_with_a_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    exporter = CountedExporter(Scripted(*[FAILURE] * 9, SUCCESS, FAILURE), "the receiver")
    pauses = []
    for _ in range(10):
        exporter.export(_spans(1))
        pauses.append(exporter.resume_at - now[0])
        now[0] = exporter.resume_at  # the next export comes when the back-off ends
    assert (BACKOFF_FIRST_S, BACKOFF_MOST_S) == (1.0, 60.0)
    assert pauses[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert pauses[7:9] == [BACKOFF_MOST_S, BACKOFF_MOST_S]
    assert pauses[9] <= 0  # the success: no back-off
    exporter.export(_spans(1))
    assert exporter.resume_at - now[0] == BACKOFF_FIRST_S  # a new failure starts from the first pause


def test_flush_and_shutdown_wait_at_most_their_timeout_for_a_receiver_that_never_answers() -> None:
    stuck = Stuck()
    settings = resolve(TracingSettings(exporter=stuck, sample_ratio=1.0, export_timeout_s=0.2))
    assert settings is not None
    provider, recorder = build_provider(settings)
    try:
        for _ in range(2000):
            recorder.keep.emit(ReadableSpan(name="span"))
        started = time.perf_counter()
        assert provider.force_flush(300) is False
        assert time.perf_counter() - started < 2.0  # the SDK's own flush: until the export returns (30 s)
        started = time.perf_counter()
        provider.shutdown()
        assert time.perf_counter() - started < 2.0
    finally:
        stuck.release.set()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An OTLP endpoint that accepts connections and never answers."""
    with LoopbackListener(hold=True) as listener:
        yield listener.url


def test_a_black_hole_gets_one_encoded_batch_per_back_off(
    black_hole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import opentelemetry.exporter.otlp.proto.http.trace_exporter as trace_exporter

    encoded: list[int] = []
    encode = trace_exporter.encode_spans  # type: ignore[attr-defined]

    def counted(spans: Sequence[ReadableSpan]) -> Any:
        encoded.append(len(spans))
        return encode(spans)

    monkeypatch.setattr(trace_exporter, "encode_spans", counted)
    monkeypatch.setattr(provider_module, "BACKOFF_FIRST_S", 30.0)  # longer than this test on a slow machine
    settings = resolve(TracingSettings(endpoint=black_hole, sample_ratio=1.0, export_timeout_s=0.3))
    assert settings is not None
    provider, recorder = build_provider(settings)
    processor: Any = provider._active_span_processor._span_processors[0]
    try:
        for _ in range(600):  # a batch is due: its export waits 0.3 s for an answer, then fails
            recorder.keep.emit(ReadableSpan(name="span"))
        deadline = time.monotonic() + 10
        while processor.span_exporter.resume_at == 0.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        errors = _errors()
        for _ in range(1000):  # during the back-off
            recorder.keep.emit(ReadableSpan(name="span"))
        started = time.perf_counter()
        assert provider.force_flush(2000) is True  # what was queued is dropped unencoded, at once
        assert time.perf_counter() - started < 1.0
        assert len(encoded) == 1
        assert _errors() - errors >= 2  # 1088 spans: at least 2 batches of 512, each counted
    finally:
        provider.shutdown()
