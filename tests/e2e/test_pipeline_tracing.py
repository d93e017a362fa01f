"""An evaluation on the cluster, traced: each example's trace runs client -> predictor -> scorer
-> aggregator.

A real OTLP/HTTP receiver (this test's own ``POST /v1/traces`` server, decoding the protobuf with
``opentelemetry-proto``) gets the spans of the client (``dspex.configure(tracing=...)``) and of
worker processes started with ``--otlp-endpoint``; the trace of each of the 20 examples must link
the client's submission, the predictor's task (with the program's spans inside), the scorer's
metric span and the aggregator's span of folding the score into the job, with the parent ids
chained across all three Kafka hops; the client's job span is the parent of the aggregator's span
of the job's end, across the jobs topic. The predictors there send every prediction to the scorer
(``--no-inline-builtin-metrics``); with their default flags a built-in metric is scored on the
predictor, whose metric span is then the same child of its task span, in the predictor's service.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from e2e_pipeline import Pipeline, cot_program, devset, sim_lm
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

import dspex
from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.observability import tracing
from dspex.observability.tracing import TracingSettings
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 20


@dataclass(frozen=True)
class Received:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: tuple[str, ...]  # span ids
    events: tuple[str, ...]  # names


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.spans)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_error(404 if self.path != "/v1/traces" else 415)
            return
        request = ExportTraceServiceRequest.FromString(body)
        found: list[Received] = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    found.append(
                        Received(
                            resource.get("service.name", ""),
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            attributes,
                            tuple(link.span_id.hex() for link in span.links),
                            tuple(event.name for event in span.events),
                        )
                    )
        with self.server.lock:
            self.server.spans.extend(found)
        payload = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _traced(pipeline: Pipeline, receiver: Receiver, *predict_flags: str) -> Pipeline:
    pipeline.start("aggregate", "--otlp-endpoint", receiver.url)
    pipeline.start("score", "--otlp-endpoint", receiver.url)
    pipeline.start("predict", "--otlp-endpoint", receiver.url, *predict_flags)
    pipeline.wait_ready()
    return pipeline


@pytest.fixture
def traced_pipeline(pipeline_factory: Callable[..., Pipeline], receiver: Receiver) -> Pipeline:
    """An aggregator, a scorer and a predictor that export their spans to ``receiver``; every
    prediction goes through the scorer."""
    return _traced(pipeline_factory(), receiver, "--no-inline-builtin-metrics")


@pytest.fixture
def inline_traced_pipeline(pipeline_factory: Callable[..., Pipeline], receiver: Receiver) -> Pipeline:
    """The same with the predictor on its default flags: it scores built-in metrics itself."""
    return _traced(pipeline_factory(), receiver)


def _evaluate_traced(pipeline: Pipeline, receiver: Receiver, lm: LM, sample_ratio: float) -> EvaluationResult:
    """The chain-of-thought program over the devset, with the client tracing to ``receiver`` at
    ``sample_ratio`` (the workers follow the header's decision: parent-based) and its spans flushed."""
    dspex.configure(tracing=TracingSettings(endpoint=receiver.url, sample_ratio=sample_ratio))
    try:
        (result,) = pipeline.evaluate([cot_program()], devset(EXAMPLES), lm)
        assert tracing.flush(10.0)
    finally:
        dspex.configure(tracing=None)
    return result


def test_each_examples_trace_links_client_predictor_scorer_and_aggregator(
    traced_pipeline: Pipeline,
    receiver: Receiver,
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    lm = sim_lm(sim_factory(latency=0.005), cache_dir)
    result = _evaluate_traced(traced_pipeline, receiver, lm, sample_ratio=1.0)  # every example sampled
    assert len(result.results) == EXAMPLES

    def complete() -> list[Received] | None:
        # each process exports on its own schedule: wait until every example's trace has the
        # client's, the predictor's (program and LM included), the scorer's and the aggregator's spans
        spans = receiver.snapshot()
        traces = {s.trace_id for s in spans if s.name == "dspex.example"}
        for name in ("dspex.predict", "dspex.score", "dspex.aggregate"):
            if {s.trace_id for s in spans if s.name == name} != traces:
                return None
        llm = {s.trace_id for s in spans if s.attributes.get("openinference.span.kind") == "LLM"}
        ended = [s for s in spans if s.name == "dspex.aggregate.job"]
        return spans if len(traces) == EXAMPLES and llm >= traces and ended else None

    spans = _wait(complete, 60.0)
    by_id = {span.span_id: span for span in spans}
    examples = [s for s in spans if s.name == "dspex.example"]
    assert len(examples) == EXAMPLES and {s.service for s in examples} == {"dspex"}
    assert len({s.trace_id for s in examples}) == EXAMPLES  # one trace per example
    (job,) = [s for s in spans if s.name == "dspex.job"]  # kept whatever the ratio: one per job
    assert all(example.links == (job.span_id,) for example in examples)
    for example in examples:
        assert example.parent_id == ""
        trace = [s for s in spans if s.trace_id == example.trace_id]
        (predict,) = [s for s in trace if s.name == "dspex.predict"]
        (score,) = [s for s in trace if s.name == "dspex.score"]
        assert (predict.service, score.service) == ("dspex-predict", "dspex-score")
        assert predict.parent_id == example.span_id  # the task's traceparent, across Kafka
        assert score.parent_id == predict.span_id  # the prediction's traceparent, across Kafka
        assert score.attributes["openinference.span.kind"] == "EVALUATOR"
        assert score.attributes["dspex.example_index"] == example.attributes["dspex.example_index"]
        (aggregate,) = [s for s in trace if s.name == "dspex.aggregate"]
        assert aggregate.service == "dspex-aggregate"
        assert aggregate.parent_id == score.span_id  # the score's traceparent, across Kafka
        assert aggregate.attributes["dspex.example_index"] == example.attributes["dspex.example_index"]
        assert aggregate.attributes["dspex.aggregate.outcome"] == "counted"
        assert aggregate.attributes["dspex.job.total_tasks"] == EXAMPLES
        assert 1 <= aggregate.attributes["dspex.job.done"] <= EXAMPLES
        (program,) = [s for s in trace if s.name.startswith("ChainOfThought")]
        assert program.parent_id == predict.span_id and program.service == "dspex-predict"
        (llm,) = [s for s in trace if s.attributes.get("openinference.span.kind") == "LLM"]
        assert llm.attributes["llm.token_count.total"] > 0
        chain, parent = [], by_id.get(llm.parent_id)
        while parent is not None:
            chain.append(parent.name)
            parent = by_id.get(parent.parent_id)
        assert chain[-3:] == [program.name, "dspex.predict", "dspex.example"]
    # the job's end is told once in the examples' traces, by the span of the record whose batch
    # completed it ...
    (ender,) = [s for s in spans if "dspex.job.ended" in s.events and s.name == "dspex.aggregate"]
    assert ender.attributes["dspex.job.state"] == "completed"
    assert ender.attributes["dspex.job.done"] == EXAMPLES
    # ... and once in the job's: the aggregator's span of the job, a child of the client's job span
    # (its record's traceparent, across Kafka)
    (ended,) = [s for s in spans if s.name == "dspex.aggregate.job"]
    assert (ended.trace_id, ended.parent_id) == (job.trace_id, job.span_id)
    assert ended.service == "dspex-aggregate" and ended.events == ("dspex.job.ended",)
    assert ended.attributes["dspex.job.state"] == "completed"
    assert ended.attributes["dspex.job.done"] == EXAMPLES
    assert ended.attributes["dspex.job_id"] == job.attributes["dspex.job_id"]


def _wait(found: Callable[[], list[Received] | None], timeout: float) -> list[Received]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value is not None:
            return value
        time.sleep(0.2)
    raise AssertionError(f"the receiver did not get every example's spans in {timeout} s")


def test_failed_examples_are_kept_at_ratio_zero_across_the_hop(
    traced_pipeline: Pipeline,
    receiver: Receiver,
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.005, garble=0.5)  # half the answers in no adapter's format
    result = _evaluate_traced(traced_pipeline, receiver, sim_lm(sim, cache_dir), sample_ratio=0.0)
    failed = {record.index for record in result.records if record.error is not None}
    assert 0 < len(failed) < EXAMPLES

    def complete() -> list[Received] | None:
        spans = receiver.snapshot()
        kept = [s for s in spans if s.name in ("dspex.score", "dspex.aggregate")]
        return spans if len(kept) >= 2 * len(failed) else None

    spans = _wait(complete, 60.0)
    time.sleep(1.0)  # a span of a passing example would come in the same batches: give it a moment
    spans = receiver.snapshot()
    predicted = {s.attributes["dspex.example_index"]: s for s in spans if s.name == "dspex.predict"}
    scored = {s.attributes["dspex.example_index"]: s for s in spans if s.name == "dspex.score"}
    aggregated = {s.attributes["dspex.example_index"]: s for s in spans if s.name == "dspex.aggregate"}
    assert set(predicted) == set(scored) == set(aggregated) == failed  # every failed one, nothing else
    assert not [s for s in spans if s.name == "dspex.example"]  # the client's part was not sampled
    for index in failed:
        assert scored[index].trace_id == predicted[index].trace_id
        assert scored[index].parent_id == predicted[index].span_id
        assert aggregated[index].trace_id == scored[index].trace_id
        assert aggregated[index].parent_id == scored[index].span_id
        program = [
            s for s in spans if s.parent_id == predicted[index].span_id and s.service == "dspex-predict"
        ]
        assert program and program[0].name.startswith("ChainOfThought")


def test_a_builtin_metric_scored_on_the_predictor_is_in_the_examples_trace(
    inline_traced_pipeline: Pipeline,
    receiver: Receiver,
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    lm = sim_lm(sim_factory(latency=0.005), cache_dir)
    result = _evaluate_traced(inline_traced_pipeline, receiver, lm, sample_ratio=1.0)
    assert len(result.results) == EXAMPLES

    def complete() -> list[Received] | None:
        spans = receiver.snapshot()
        traces = {s.trace_id for s in spans if s.name == "dspex.example"}
        for name in ("dspex.predict", "dspex.score", "dspex.aggregate"):
            if {s.trace_id for s in spans if s.name == name} != traces:
                return None
        return spans if len(traces) == EXAMPLES else None

    spans = _wait(complete, 60.0)
    assert not [s for s in spans if s.service == "dspex-score"], "the scorer saw none of the examples"
    for example in [s for s in spans if s.name == "dspex.example"]:
        trace = [s for s in spans if s.trace_id == example.trace_id]
        (predict,) = [s for s in trace if s.name == "dspex.predict"]
        (score,) = [s for s in trace if s.name == "dspex.score"]
        (aggregate,) = [s for s in trace if s.name == "dspex.aggregate"]
        assert (predict.service, score.service) == ("dspex-predict", "dspex-predict")
        assert predict.parent_id == example.span_id
        assert score.parent_id == predict.span_id  # as the scorer's span would be
        assert score.attributes["openinference.span.kind"] == "EVALUATOR"
        assert score.attributes["dspex.example_index"] == example.attributes["dspex.example_index"]
        assert "dspex.score" in score.attributes
        assert aggregate.parent_id == score.span_id  # the score's traceparent, across Kafka
