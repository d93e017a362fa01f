"""Fixtures the tracing tests share: an in-process simulated LM and an in-memory span exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import dspex
from dspex.testing import SimulatedLMServer


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedLMServer]:
    """A simulated LM (a simulation, not a real model) served from a thread of this process."""
    with SimulatedLMServer(in_process=True) as server:
        yield server


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """An exporter the test hands to tracing; tracing and callbacks are off again afterwards."""
    exporter = InMemorySpanExporter()
    yield exporter
    dspex.configure(tracing=None, callbacks=[])
