"""TwoStepAdapter: a free-form first answer, then a ChatAdapter extraction with the second LM."""

from __future__ import annotations

import pytest

import dspex
from dspex.adapters import TwoStepAdapter
from dspex.errors import AdapterParseError, ConfigurationError
from dspex.signatures import make_signature
from dspex.utils import DummyLM

SIG = make_signature("question -> answer: int, why", "Answer briefly.")


def test_first_prompt_is_a_task_description_and_plain_turns() -> None:
    adapter = TwoStepAdapter(DummyLM([]))
    demos = [{"question": "1 + 1?", "answer": 2, "why": "sum"}]
    system, demo_user, demo_answer, user = adapter.format(SIG, demos, {"question": "2 + 2?"})
    assert system["content"].startswith(
        "You are a helpful assistant that can solve tasks based on user input."
    )
    assert system["content"].endswith("Specific instructions: Answer briefly.")
    assert "Your outputs must contain:\n1. `answer` (int): \n2. `why` (str):" in system["content"]
    assert demo_user["content"] == "question: 1 + 1?" and demo_answer["content"] == "answer: 2\n\nwhy: sum"
    assert user == {"role": "user", "content": "question: 2 + 2?"}


def test_parse_asks_the_extraction_model() -> None:
    extractor = DummyLM([{"answer": "4", "why": "two and two"}])
    assert TwoStepAdapter(extractor).parse(SIG, "It is four, two and two.") == {
        "answer": 4,
        "why": "two and two",
    }
    messages, _ = extractor.get_convo(-1)
    assert "[[ ## text ## ]]\nIt is four, two and two." in messages[-1]["content"]


def test_extraction_failures_name_the_first_answer() -> None:
    extractor = DummyLM([{"nothing": "x"}, {"nothing": "x"}])  # the chat try and its JSON fallback
    with pytest.raises(
        AdapterParseError, match="Failed to parse response from the original completion"
    ) as info:
        TwoStepAdapter(extractor).parse(SIG, "no idea")
    assert info.value.raw_text == "no idea" and info.value.adapter_name == "TwoStepAdapter"


async def test_predict_runs_both_steps() -> None:
    main = DummyLM([{"prose": "ignored by the adapter"}])
    extractor = DummyLM([{"answer": "7", "why": "counted"}])
    qa = dspex.Predict(SIG, lm=main, adapter=TwoStepAdapter(extractor))
    pred = await qa.acall(question="How many days in a week?")
    assert pred.answer == 7 and pred.why == "counted"
    first, _ = main.get_convo(-1)
    assert first[-1]["content"] == "question: How many days in a week?"


async def test_dspy_style_acall_returns_a_list() -> None:
    adapter = TwoStepAdapter(DummyLM([{"answer": "3", "why": "w"}]))
    outputs = await adapter.acall(DummyLM([{"x": "y"}]), {}, SIG, [], {"question": "q"})
    assert outputs == [{"answer": 3, "why": "w"}]


def test_the_extraction_model_must_be_an_lm() -> None:
    with pytest.raises(ConfigurationError, match="extraction_model"):
        TwoStepAdapter("openai/gpt-4o-mini")  # type: ignore[arg-type]
