"""Tracing through the callback seam: spans of real programs on the simulated LM, read back from
the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import dspex
from dspex.errors import ConfigurationError
from dspex.evaluate import Evaluate
from dspex.lm import LM
from dspex.modules import ChainOfThought, ReAct
from dspex.observability import tracing
from dspex.observability.tracing import TracingSettings
from dspex.observability.tracing.provider import EXPORT_ERRORS
from dspex.observability.tracing.settings import DEFAULT_EXPORT_TIMEOUT_S, resolve, sampler_ratio
from dspex.primitives import Example, Module, Prediction
from dspex.testing import SimulatedLMServer

SECRET = "sk-test-TRACING-SECRET-0042"


@pytest.fixture
def lm(sim: SimulatedLMServer) -> LM:
    return LM("openai/sim", api_base=sim.base_url, api_key=SECRET, cache=False)


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    dspex.configure(tracing=None)


def traced(exporter: InMemorySpanExporter, ratio: float = 1.0) -> None:
    dspex.configure(tracing=TracingSettings(exporter=exporter, sample_ratio=ratio))


def spans_of(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert tracing.flush(5.0)
    return list(exporter.get_finished_spans())


def by_name(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


def ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> list[str]:
    index = {s.context.span_id: s for s in spans if s.context is not None}
    names: list[str] = []
    parent = span.parent
    while parent is not None and parent.span_id in index:
        found = index[parent.span_id]
        names.append(found.name)
        parent = found.parent
    return names


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_a_chain_of_thought_call_is_one_trace_module_predictor_lm(
    lm: LM, exported: InMemorySpanExporter
) -> None:
    traced(exported)
    with dspex.context(lm=lm):
        ChainOfThought("question -> answer")(question="What is the capital of France?")
    spans = spans_of(exported)
    (root,) = [s for s in spans if s.parent is None]
    assert root.name.startswith("ChainOfThought") and root.attributes is not None
    assert root.attributes["openinference.span.kind"] == "CHAIN"
    assert "capital of France" in str(root.attributes["input.value"])
    assert {s.context.trace_id for s in spans if s.context} == {root.context.trace_id}  # type: ignore[union-attr]
    (llm,) = by_name(spans, "LM.")
    attributes = dict(llm.attributes or {})
    assert attributes["openinference.span.kind"] == "LLM"
    assert attributes["llm.model_name"] == "openai/sim"
    assert attributes["llm.input_messages.0.message.role"] == "system"
    assert "capital of France" in str(attributes["llm.input_messages.1.message.content"])
    assert attributes["llm.output_messages.0.message.role"] == "assistant"
    assert int(attributes["llm.token_count.prompt"]) > 0  # type: ignore[arg-type]
    assert attributes["llm.token_count.total"] == (
        int(attributes["llm.token_count.prompt"]) + int(attributes["llm.token_count.completion"])  # type: ignore[arg-type]
    )
    assert attributes["dspex.lm.attempts"] == 1 and attributes["dspex.lm.retries"] == 0
    assert float(attributes["dspex.lm.latency_s"]) > 0  # type: ignore[arg-type]
    # the LM call sits under the predictor, which sits under the program
    assert ancestors(llm, spans)[-1] == root.name and len(ancestors(llm, spans)) >= 2
    assert any(name.startswith("Predict(") for name in ancestors(llm, spans))
    # the adapter's format and parse are spans beside the LM call, under the same predictor
    (formatted,) = by_name(spans, "ChatAdapter.format")
    (parsed,) = by_name(spans, "ChatAdapter.parse")
    assert ancestors(formatted, spans) == ancestors(parsed, spans) == ancestors(llm, spans)
    assert "capital of France" in str(dict(formatted.attributes or {})["output.value"])
    assert formatted.end_time <= llm.start_time and llm.end_time <= parsed.start_time  # type: ignore[operator]


def test_a_react_tool_call_is_a_tool_span_inside_the_agent(lm: LM, exported: InMemorySpanExporter) -> None:
    traced(exported)
    with dspex.context(lm=lm):
        result = ReAct("question -> answer: int", tools=[add])(question="What is 12 + 30?")
    assert result.answer == 42
    spans = spans_of(exported)
    (tool,) = by_name(spans, "Tool.add")
    assert tool.attributes is not None and tool.attributes["openinference.span.kind"] == "TOOL"
    assert tool.attributes["tool.name"] == "add"
    assert '"a": 12' in str(tool.attributes["input.value"]) and "42" in str(tool.attributes["output.value"])
    assert ancestors(tool, spans)[-1].startswith("ReAct")
    assert len(by_name(spans, "LM.")) >= 2  # a step that calls the tool, then the finish and extract


def test_no_secret_reaches_any_attribute_or_event(lm: LM, exported: InMemorySpanExporter) -> None:
    traced(exported)
    with dspex.context(lm=lm):
        ChainOfThought("question, api_key -> answer")(question="Say hi", api_key=SECRET)
        ReAct("question -> answer: int", tools=[add])(question="What is 1 + 2?")
    spans = spans_of(exported)
    assert len(spans) > 5
    for span in spans:
        texts = [str(v) for v in (span.attributes or {}).values()]
        texts += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        assert not any(SECRET in text for text in texts), span.name


class Echo(Module):
    """A program with no LM: one span per call, cheap enough to sample many times."""

    async def aforward(self, question: str) -> Prediction:
        if question.startswith("fail"):
            raise ValueError(f"cannot answer {question}")
        return Prediction(answer=question)


def test_the_sampling_ratio_is_honoured_per_trace(exported: InMemorySpanExporter) -> None:
    traced(exported, ratio=0.2)
    program = Echo()
    for index in range(500):
        program(question=f"q{index}")
    kept = len(spans_of(exported))
    assert 50 <= kept <= 150, kept  # binomial(500, 0.2): mean 100, sd ~9


def test_failed_examples_are_kept_whole_at_ratio_zero(lm: LM, exported: InMemorySpanExporter) -> None:
    traced(exported, ratio=0.0)

    class Answer(Module):
        def __init__(self) -> None:
            super().__init__()
            self.cot = ChainOfThought("question -> answer")

        async def aforward(self, question: str) -> Prediction:
            prediction = await self.cot.acall(question=question)
            if "fail" in question:
                raise ValueError("the program failed on purpose")
            return prediction

    devset = [
        Example(question=f"{'fail' if i % 5 == 0 else 'ok'} question {i}").with_inputs("question")
        for i in range(10)
    ]
    with dspex.context(lm=lm):
        result = Evaluate(devset=devset, metric=lambda example, prediction, trace=None: 1.0, num_threads=4)(
            Answer()
        )
    assert result.score == pytest.approx(80.0)
    spans = spans_of(exported)
    roots = [s for s in spans if s.parent is None]
    # two failed examples, each its own trace, kept: the program's span and its LM call; nothing else
    assert sorted(str(r.attributes["input.value"]) for r in roots if r.attributes) == [
        '{"question": "fail question 0"}',
        '{"question": "fail question 5"}',
    ]
    assert all(r.status.status_code is StatusCode.ERROR and r.links for r in roots)  # linked to Evaluate
    assert len({s.context.trace_id for s in spans if s.context}) == 2
    assert len(spans) == 4 and len(by_name(spans, "LM.")) == 2 and not by_name(spans, "Evaluate")
    # the calls inside an unsampled example were not announced to tracing: no predictor or adapter
    # span; its LM call is made from the LM call log, under the program's span, with what it sent
    # and got
    for llm in by_name(spans, "LM."):
        (root,) = [r for r in roots if r.context.trace_id == llm.context.trace_id]
        assert llm.parent is not None and llm.parent.span_id == root.context.span_id
        assert llm.attributes is not None and llm.attributes["llm.model_name"] == "openai/sim"
        assert "question" in str(llm.attributes["llm.input_messages.1.message.content"])
        assert llm.attributes["llm.output_messages.0.message.role"] == "assistant"
        assert root.start_time <= llm.start_time <= llm.end_time <= root.end_time  # type: ignore[operator]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_endpoint_is_counted_logged_once_and_slows_nothing(
    exported: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    dspex.configure(tracing=TracingSettings(endpoint=f"http://127.0.0.1:{closed_port()}", sample_ratio=1.0))
    before = EXPORT_ERRORS._value.get()
    program = Echo()
    with caplog.at_level(logging.WARNING, logger="dspex.observability.tracing.provider"):
        started = time.perf_counter()
        for index in range(200):
            program(question=f"q{index}")
        elapsed = time.perf_counter() - started
        flushing = time.perf_counter()
        tracing.flush(10.0)  # the export fails (refused, retried): bounded by the export timeout
        flush_s = time.perf_counter() - flushing
        program(question="again")
        tracing.flush(10.0)
    assert EXPORT_ERRORS._value.get() >= before + 2
    warnings = [r for r in caplog.records if "could not export" in r.getMessage()]
    assert len(warnings) == 1 and "dspex_trace_export_errors_total" in warnings[0].getMessage()
    assert elapsed < 5.0  # 200 calls; an export waiting on the endpoint would take seconds each
    assert flush_s < DEFAULT_EXPORT_TIMEOUT_S + 2.0


def test_settings_from_the_standard_variables() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SERVICE_NAME": "evals"}
    settings = resolve(True, env)
    assert settings is not None and settings.traces_url == "http://collector:4318/v1/traces"
    assert settings.sample_ratio == tracing.DEFAULT_SAMPLE_RATIO == 0.01 and settings.service_name == "evals"
    assert (
        sampler_ratio({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
        == 0.25
    )
    assert sampler_ratio({"OTEL_TRACES_SAMPLER": "always_on"}) == 1.0
    assert resolve("http://x:4318/v1/traces", {}).traces_url == "http://x:4318/v1/traces"  # type: ignore[union-attr]
    assert resolve(True, {**env, "OTEL_SDK_DISABLED": "true"}) is None
    with pytest.raises(ConfigurationError, match="OTEL_TRACES_SAMPLER_ARG"):
        sampler_ratio({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"})
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        resolve(True, {})
    with pytest.raises(ConfigurationError, match="process-wide"), dspex.context(tracing="http://x:1"):
        pass


def test_off_by_default_and_off_again(exported: InMemorySpanExporter) -> None:
    assert tracing.active() is None and dspex.settings.tracing is None
    traced(exported)
    assert tracing.active() is not None
    callbacks: list[Any] = dspex.settings.callbacks
    assert sum(type(c).__name__ == "TracingCallback" for c in callbacks) == 1
    dspex.configure(tracing=None)
    assert tracing.active() is None
    assert not any(type(c).__name__ == "TracingCallback" for c in dspex.settings.callbacks)


class Consumed:
    """What the workers read from a consumed record here: its headers (as confluent-kafka gives them)."""

    def __init__(self, headers: list[tuple[str, bytes]]) -> None:
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


def test_the_traceparent_travels_in_headers_and_a_failed_worker_part_is_kept(
    exported: InMemorySpanExporter,
) -> None:
    from dspex.observability.tracing import kafka
    from dspex.schemas.headers import HEADER_TRACEPARENT, headers_for
    from dspex.schemas.tasks import Task

    traced(exported, ratio=1.0)
    task = Task(
        task_id="t-1", job_id="j-1", candidate_id="c-1", example_index=3, example={"q": "x"}, input_keys=["q"]
    )
    assert HEADER_TRACEPARENT not in dict(headers_for(task))
    with kafka.job_submitted(task), kafka.submitted(task):
        headers = headers_for(task)
    traceparent = dict(headers)[HEADER_TRACEPARENT].decode()
    with kafka.continued(Consumed(headers), "dspex.predict", task):
        produced = dict(headers_for(task))[HEADER_TRACEPARENT].decode()
    spans = {span.name: span for span in spans_of(exported)}
    example, predict = spans["dspex.example"], spans["dspex.predict"]
    ids = f"00-{example.context.trace_id:032x}-{example.context.span_id:016x}-"  # type: ignore[union-attr]
    assert traceparent.startswith(ids) and int(traceparent[-2:], 16) & 1  # the sampled flag
    assert predict.parent is not None and predict.parent.span_id == example.context.span_id  # type: ignore[union-attr]
    assert produced.split("-")[2] == f"{predict.context.span_id:016x}"  # type: ignore[union-attr]
    assert example.links[0].context.span_id == spans["dspex.job"].context.span_id  # type: ignore[union-attr]
    assert predict.attributes is not None and predict.attributes["dspex.example_index"] == 3

    # an unsampled example (flags 00): the worker's part is exported only when it fails there
    exported.clear()
    unsampled = [("traceparent", f"00-{'ab' * 16}-{'cd' * 8}-00".encode())]
    with kafka.continued(Consumed(unsampled), "dspex.score", task, evaluator=True):
        pass
    with kafka.continued(Consumed(unsampled), "dspex.score", task, evaluator=True) as span:
        span.failed("ValueError: the metric raised")
    (kept,) = spans_of(exported)
    assert kept.status.status_code is StatusCode.ERROR and kept.context.trace_id == int("ab" * 16, 16)  # type: ignore[union-attr]
    assert kept.attributes is not None and kept.attributes["openinference.span.kind"] == "EVALUATOR"


def test_a_worker_traces_only_to_the_endpoint_it_was_started_with(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from dspex.cli import app
    from dspex.cli import worker as worker_cli

    served: list[Any] = []
    monkeypatch.setattr(worker_cli, "_settings", lambda bootstrap: None)
    monkeypatch.setattr(worker_cli, "Scorer", lambda settings, options: options)
    monkeypatch.setattr(worker_cli, "_serve", served.append)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    try:
        result = CliRunner().invoke(app, ["worker", "score", "--otlp-endpoint", "http://127.0.0.1:4318"])
        assert result.exit_code == 0, result.output
        active = tracing.active()
        assert active is not None and active.settings.traces_url == "http://127.0.0.1:4318/v1/traces"
        assert active.settings.service_name == "dspex-score" and served
        assert active.callback in dspex.settings.callbacks
    finally:
        dspex.configure(tracing=None)
    bad = CliRunner().invoke(app, ["worker", "score", "--otlp-endpoint", "ftp://collector"])
    said = " ".join(bad.output.replace("│", " ").split())  # rich wraps the message in a box
    assert bad.exit_code == 2 and "needs an http:// or https:// URL" in said and tracing.active() is None


def test_an_unsampled_example_starts_no_sdk_span_and_builds_no_attribute(
    lm: LM, exported: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dspex.observability.tracing import sources

    calls = {"start_span": 0, "json_text": 0, "message_attributes": 0, "secrets": 0}

    def counted(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    for name in ("json_text", "message_attributes"):  # what message and value attributes are built by
        monkeypatch.setattr(sources, name, counted(name, getattr(sources, name)))
    monkeypatch.setattr(sources.LM, "_secrets", counted("secrets", sources.LM._secrets))
    devset = [Example(question=f"What is {i} + 1?").with_inputs("question") for i in range(20)]

    def evaluate(ratio: float, exporter: InMemorySpanExporter) -> None:
        traced(exporter, ratio=ratio)
        active = tracing.active()
        assert active is not None
        tracer = active.recorder.tracer
        monkeypatch.setattr(tracer, "start_span", counted("start_span", tracer.start_span))
        with dspex.context(lm=lm):
            Evaluate(devset=devset, metric=lambda example, prediction, trace=None: 1.0, num_threads=4)(
                ChainOfThought("question -> answer")
            )

    evaluate(0.0, exported)  # every example passes: nothing is kept
    assert calls == {"start_span": 0, "json_text": 0, "message_attributes": 0, "secrets": 0}
    assert spans_of(exported) == []
    sampled = InMemorySpanExporter()  # the first one is shut down with its provider
    evaluate(1.0, sampled)  # the same run sampled: every span is the SDK's, with its contents
    assert calls["start_span"] >= 20 * 5 and calls["json_text"] > 0 and calls["message_attributes"] > 0
    assert calls["secrets"] == 20 and len(by_name(spans_of(sampled), "LM.")) == 20


def test_a_failed_unsampled_example_is_kept_without_its_secrets(
    lm: LM, exported: InMemorySpanExporter
) -> None:
    traced(exported, ratio=0.0)

    class Leaky(Module):
        def __init__(self) -> None:
            super().__init__()
            self.cot = ChainOfThought("question, api_key -> answer")

        async def aforward(self, question: str, api_key: str) -> Prediction:
            await self.cot.acall(question=question, api_key=api_key)
            raise ValueError(f"failed with {api_key}")

    with dspex.context(lm=lm), pytest.raises(ValueError):
        Leaky()(question="Say hi", api_key=SECRET)
    spans = spans_of(exported)
    assert by_name(spans, "Leaky") and by_name(spans, "LM.") and not by_name(spans, "ChatAdapter.format")
    (llm,) = by_name(spans, "LM.")  # with its prompt, where the secret-named input was formatted into
    assert "[redacted]" in str(dict(llm.attributes or {})["llm.input_messages.1.message.content"])
    (root,) = by_name(spans, "Leaky")
    assert root.status.status_code is StatusCode.ERROR and "[redacted]" in str(root.status.description)
    for span in spans:
        texts = [str(v) for v in (span.attributes or {}).values()] + [str(span.status.description)]
        texts += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        assert not any(SECRET in text for text in texts), span.name
