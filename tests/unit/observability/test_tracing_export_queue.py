"""A receiver that never answers fills the export queue: the spans that find it full are dropped at
once, counted, and reported once, never a warning per span."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from dspex.observability.tracing.provider import build_provider
from dspex.observability.tracing.settings import TracingSettings, resolve


class Stuck(SpanExporter):
    """Takes a batch and never returns until released (a black hole)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches += 1
        self.release.wait(30)
        return SpanExportResult.FAILURE


def test_a_full_export_queue_drops_spans_counted_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    stuck = Stuck()
    settings = resolve(TracingSettings(exporter=stuck, sample_ratio=1.0))
    assert settings is not None
    provider, recorder = build_provider(settings)
    processor: Any = provider._active_span_processor._span_processors[0]
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(5000):  # the queue holds 2048, the stuck export one batch of 512 at most
                recorder.keep.emit(ReadableSpan(name="span"))
        assert processor.dropped >= 5000 - 2048 - 512
        reports = [r for r in caplog.records if "queue is full" in r.getMessage()]
        assert len(reports) == 1  # once a minute at most, not once per span
        assert not [r for r in caplog.records if "Queue full" in r.getMessage()]  # nor the SDK's own
    finally:
        stuck.release.set()
        provider.shutdown()
