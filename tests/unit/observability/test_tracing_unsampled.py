"""An unsampled example costs tracing its own call only: the calls it makes are not announced to the
tracing callback, and if it fails it is exported with its LM calls, made from the LM call log."""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import dspex
from dspex.evaluate import Evaluate
from dspex.lm import LM
from dspex.lm.call_log import logging_lm_calls
from dspex.modules import ChainOfThought
from dspex.observability import tracing
from dspex.observability.tracing import TracingSettings
from dspex.primitives import Example, Module, Prediction
from dspex.testing import SimulatedLMServer
from dspex.utils.callback import BaseCallback, active_callbacks, muted, unmuted

HOOKS = (
    "on_module_start",
    "on_lm_start",
    "on_lm_attempt",
    "on_lm_request",
    "on_adapter_format_start",
    "on_adapter_parse_start",
    "on_evaluate_start",
)


@pytest.fixture
def lm(sim: SimulatedLMServer) -> LM:
    return LM("openai/sim", api_base=sim.base_url, api_key="sim-key", cache=False)


def traced(exporter: InMemorySpanExporter, ratio: float, callbacks: list[Any] | None = None) -> Counter[str]:
    """Tracing at ``ratio`` to ``exporter``, its callback's hooks counted (the returned counter)."""
    dspex.configure(tracing=TracingSettings(exporter=exporter, sample_ratio=ratio), callbacks=callbacks or [])
    active = tracing.active()
    assert active is not None
    heard: Counter[str] = Counter()
    for hook in HOOKS:
        original = getattr(active.callback, hook)

        def counted(*args: Any, _hook: str = hook, _original: Any = original, **kwargs: Any) -> Any:
            heard[_hook] += 1
            return _original(*args, **kwargs)

        setattr(active.callback, hook, counted)  # the seam looks each hook up on the instance
    return heard


def spans_of(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert tracing.flush(5.0)
    return list(exporter.get_finished_spans())


class Everything(BaseCallback):
    """Another callback beside tracing: it hears every call whatever tracing samples."""

    def __init__(self) -> None:
        self.heard: Counter[str] = Counter()

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.heard["module"] += 1

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.heard["lm"] += 1

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.heard["format"] += 1


def evaluate(lm: LM, examples: int, program: Module | None = None) -> None:
    devset = [Example(question=f"What is {i} + 2?").with_inputs("question") for i in range(examples)]
    with dspex.context(lm=lm):
        Evaluate(devset=devset, metric=lambda example, prediction, trace=None: 1.0, num_threads=4)(
            program or ChainOfThought("question -> answer")
        )


def test_an_unsampled_example_announces_only_its_own_call_to_tracing(
    lm: LM, exported: InMemorySpanExporter
) -> None:
    other = Everything()
    heard = traced(exported, ratio=0.0, callbacks=[other])
    evaluate(lm, 12)
    # tracing heard the evaluation only: each example's sampling was drawn before its program call,
    # so an unsampled example is announced to tracing not even at its own call
    assert dict(heard) == {"on_evaluate_start": 1}
    assert spans_of(exported) == []  # and nothing failed, so nothing is exported
    # the callback beside it heard everything: only tracing is muted inside the examples
    assert other.heard == {"module": 24, "lm": 12, "format": 12}

    sampled = InMemorySpanExporter()  # the same run sampled: every call announced, every span made
    heard = traced(sampled, ratio=1.0)
    evaluate(lm, 12)
    assert heard["on_module_start"] == 24 and heard["on_lm_start"] == 12
    assert heard["on_adapter_format_start"] == heard["on_adapter_parse_start"] == 12
    assert heard["on_lm_attempt"] == heard["on_lm_request"] == 12
    names = Counter(span.name.split("(")[0].split(".")[0] for span in spans_of(sampled))
    assert names == {"Evaluate": 1, "ChainOfThought": 12, "Predict": 12, "LM": 12, "ChatAdapter": 24}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TwoCalls(Module):
    """Asks the working LM, then one that cannot be reached: the example fails on its second call."""

    def __init__(self, broken: LM) -> None:
        super().__init__()
        self.first = ChainOfThought("question -> answer")
        self.second = ChainOfThought("question, draft -> answer")
        self.broken = broken

    async def aforward(self, question: str) -> Prediction:
        draft = await self.first.acall(question=question)
        with dspex.context(lm=self.broken):
            return await self.second.acall(question=question, draft=draft.answer)


def test_a_failed_unsampled_example_is_exported_with_its_error_and_its_lm_calls(
    lm: LM, exported: InMemorySpanExporter
) -> None:
    heard = traced(exported, ratio=0.0)
    broken = LM("openai/down", api_base=f"http://127.0.0.1:{closed_port()}/v1", api_key="k", max_retries=0)
    program = TwoCalls(broken)
    with dspex.context(lm=lm), pytest.raises(Exception) as raised:
        program(question="What is 40 + 2?")
    assert heard["on_module_start"] == 1 and not heard["on_lm_start"] and not heard["on_lm_attempt"]
    spans = spans_of(exported)
    (root,) = [span for span in spans if span.parent is None]
    assert root.name == "TwoCalls" and root.status.status_code is StatusCode.ERROR
    assert type(raised.value).__name__ in str(root.status.description)
    assert root.attributes is not None and root.attributes["input.value"] == '{"question": "What is 40 + 2?"}'
    first, second = sorted(
        (span for span in spans if span.name.startswith("LM.")), key=lambda s: s.start_time or 0
    )
    assert len(spans) == 3
    for llm in (first, second):
        assert llm.parent is not None and llm.parent.span_id == root.context.span_id
        assert llm.context.trace_id == root.context.trace_id
        assert root.start_time <= llm.start_time <= llm.end_time <= root.end_time  # type: ignore[operator]
    assert first.end_time <= second.start_time  # type: ignore[operator]
    answered, failed = dict(first.attributes or {}), dict(second.attributes or {})
    assert first.name == "LM.openai/sim" and answered["dspex.lm.outcome"] == "ok"
    assert isinstance(answered["llm.token_count.prompt"], int) and answered["llm.token_count.prompt"] > 0
    assert "40 + 2" in str(answered["input.value"])
    assert answered["llm.output_messages.0.message.role"] == "assistant"
    assert second.name == "LM.openai/down" and failed["dspex.lm.outcome"] == "error"
    assert second.status.status_code is StatusCode.ERROR and [e.name for e in second.events] == ["exception"]
    assert "draft" in str(failed["input.value"]) and "llm.output_messages.0.message.role" not in failed


def test_a_worker_part_keeps_the_lm_calls_its_task_logged(lm: LM, exported: InMemorySpanExporter) -> None:
    from dspex.observability.tracing import kafka
    from dspex.schemas.tasks import Task

    traced(exported, ratio=1.0)  # a worker continues what the message's traceparent decided
    task = Task(
        task_id="t", job_id="j", candidate_id="c", example_index=0, example={"q": "x"}, input_keys=["q"]
    )

    class Failing(Module):
        def __init__(self) -> None:
            super().__init__()
            self.cot = ChainOfThought("question -> answer")

        async def aforward(self, question: str) -> Prediction:
            await self.cot.acall(question=question)
            raise ValueError("the program failed on purpose")

    class Consumed:
        def headers(self) -> list[tuple[str, bytes]]:
            return [("traceparent", f"00-{'ab' * 16}-{'cd' * 8}-00".encode())]  # not sampled

    # a predictor opens an LM call log per task
    with (
        dspex.context(lm=lm),
        logging_lm_calls() as log,
        kafka.continued(Consumed(), "dspex.predict", task) as span,
    ):
        try:
            Failing()(question="What is 1 + 1?")
        except ValueError as exc:
            span.failed(f"ValueError: {exc}")
    assert len(log.calls) == 1  # the predictor's log is the one used, and still holds its call
    spans = {span.name.split("(")[0]: span for span in spans_of(exported)}
    assert set(spans) == {"dspex.predict", "Failing", "LM.openai/sim"}
    predict, program, llm = spans["dspex.predict"], spans["Failing"], spans["LM.openai/sim"]
    assert predict.status.status_code is program.status.status_code is StatusCode.ERROR
    assert program.parent is not None and program.parent.span_id == predict.context.span_id
    assert llm.parent is not None and llm.parent.span_id == program.context.span_id
    assert {s.context.trace_id for s in spans.values()} == {int("ab" * 16, 16)}


def test_a_muted_callback_hears_no_call_started_while_muted() -> None:
    class Heard(BaseCallback):
        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...

    quiet, loud = Heard(), Heard()
    with dspex.context(callbacks=[quiet, loud]):
        installed = active_callbacks(None)
        token = muted(quiet)
        try:
            assert active_callbacks(None) == [loud]
            assert active_callbacks(None) is active_callbacks(None)  # the filtered list is reused
        finally:
            unmuted(token)
        assert active_callbacks(None) is installed
    with dspex.context(callbacks=[quiet]):
        token = muted(quiet)
        assert active_callbacks(None) == []
        unmuted(token)
        assert active_callbacks(None) == [quiet]
