"""An evaluation's examples are sampled before their program is called: an unsampled one is not
announced to tracing at all, a failed one is still exported (made after the fact), and a sampled
one is drawn once."""

from __future__ import annotations

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
from dspex.observability.tracing import TracingSettings, lean
from dspex.primitives import Example, Module, Prediction
from dspex.testing import SimulatedLMServer

SECRET = "sk-examples-secret-0123456789"


@pytest.fixture
def lm(sim: SimulatedLMServer) -> LM:
    return LM("openai/sim", api_base=sim.base_url, api_key="sim-key", cache=False)


def spans_of(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert tracing.flush(5.0)
    return list(exporter.get_finished_spans())


class FailsOnSome(Module):
    """Asks the LM twice, then fails on the questions that say so."""

    def __init__(self) -> None:
        super().__init__()
        self.cot = ChainOfThought("question, api_key -> answer")

    async def aforward(self, question: str, api_key: str) -> Prediction:
        await self.cot.acall(question=question, api_key=api_key)
        prediction = await self.cot.acall(question=f"again: {question}", api_key=api_key)
        if "fail" in question:
            raise ValueError(f"failed on purpose with {api_key}")
        return prediction


def devset(count: int, failing: set[int]) -> list[Example]:
    return [
        Example(question=f"{'fail' if i in failing else 'ok'} {i}", api_key=SECRET).with_inputs(
            "question", "api_key"
        )
        for i in range(count)
    ]


def score(example: Example, prediction: Prediction, trace: Any = None) -> float:
    return 1.0


@pytest.mark.parametrize("threads", [1, 3])
def test_a_failed_unsampled_example_keeps_its_own_lm_calls_only_and_no_secret(
    lm: LM, exported: InMemorySpanExporter, threads: int
) -> None:
    dspex.configure(tracing=TracingSettings(exporter=exported, sample_ratio=0.0))
    with dspex.context(lm=lm):
        result = Evaluate(devset=devset(9, {4}), metric=score, num_threads=threads)(FailsOnSome())
    assert result.errors == 1
    spans = spans_of(exported)
    (root,) = [span for span in spans if span.parent is None]
    assert root.name == "FailsOnSome" and root.status.status_code is StatusCode.ERROR
    assert root.links  # to the evaluation's span
    assert root.attributes is not None and '"question": "fail 4"' in str(root.attributes["input.value"])
    llms = [span for span in spans if span.name.startswith("LM.")]
    # the two calls the failed example made, none of the calls the worker's earlier examples made
    assert len(spans) == 3 and len(llms) == 2
    assert all(
        "fail 4" in str(dict(llm.attributes or {})["llm.input_messages.1.message.content"]) for llm in llms
    )
    for llm in llms:
        assert llm.parent is not None and llm.parent.span_id == root.context.span_id
        assert root.start_time <= llm.start_time <= llm.end_time <= root.end_time  # type: ignore[operator]
    for span in spans:
        texts = [str(v) for v in (span.attributes or {}).values()] + [str(span.status.description)]
        texts += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        assert not any(SECRET in text for text in texts), span.name


def test_each_example_is_drawn_once_and_a_sampled_one_is_traced_whole(
    lm: LM, exported: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws: list[bool] = []

    class Alternating:
        """Every other draw below the ratio: sampled, not, sampled..."""

        def random(self) -> float:
            draws.append(len(draws) % 2 == 0)
            return 0.1 if draws[-1] else 0.9

    monkeypatch.setattr(lean, "_RANDOM", Alternating())
    dspex.configure(tracing=TracingSettings(exporter=exported, sample_ratio=0.5))
    with dspex.context(lm=lm):
        Evaluate(devset=devset(6, set()), metric=score, num_threads=2)(FailsOnSome())
    # one draw per example (the evaluation's own span is a draw too), none by its program's call
    assert len(draws) == 1 + 6
    sampled_examples = sum(draws[1:])
    roots = Counter(span.name for span in spans_of(exported) if span.parent is None)
    evaluation = {"Evaluate": 1} if draws[0] else {}
    assert roots == {**evaluation, "FailsOnSome": sampled_examples}
    names = Counter(span.name.split("(")[0] for span in spans_of(exported))
    assert names["Predict"] == names["LM.openai/sim"] == 2 * sampled_examples


def test_a_log_open_around_the_evaluation_keeps_every_call(lm: LM, exported: InMemorySpanExporter) -> None:
    dspex.configure(tracing=TracingSettings(exporter=exported, sample_ratio=0.0))
    with dspex.context(lm=lm), logging_lm_calls() as log:
        # (one example at a time: the workers of a concurrent evaluation would share that log, and a
        # failed example's calls could not be told from the others')
        Evaluate(devset=devset(5, {2}), metric=score, num_threads=1)(FailsOnSome())
    assert len(log.calls) == 10  # used as it is: not replaced, nothing cleared
    llms = [span for span in spans_of(exported) if span.name.startswith("LM.")]
    assert len(llms) == 2 and all("fail 2" in str(dict(s.attributes or {})) for s in llms)


def test_an_evaluation_inside_an_unsampled_example_hears_nothing(
    lm: LM, exported: InMemorySpanExporter
) -> None:
    class Inner(Module):
        async def aforward(self, question: str, api_key: str) -> Prediction:
            await Evaluate(devset=devset(3, {1}), metric=score, num_threads=2).acall(FailsOnSome())
            return Prediction(answer="done")

    dspex.configure(tracing=TracingSettings(exporter=exported, sample_ratio=0.0))
    with dspex.context(lm=lm):
        Inner()(question="q", api_key=SECRET)
    assert spans_of(exported) == []  # the outer example passed: its inner failures are not its own
