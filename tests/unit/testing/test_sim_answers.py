"""What the simulated LM answers, measured over prompts built with DSPy's own adapters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import dspy
import pytest

from dspex.testing import arithmetic_rows
from dspex.testing._completion import build_completion
from dspex.testing._prompt import read_prompt

N = 500
QUESTIONS = arithmetic_rows(N, seed=11)
DEMOS = [dspy.Example(**row) for row in arithmetic_rows(4, seed=12)]


def _messages(
    signature: Any, demos: Sequence[dspy.Example], question: str, adapter: Any = None
) -> list[dict]:
    adapter = adapter or dspy.ChatAdapter()
    return adapter.format(dspy.ensure_signature(signature), demos=list(demos), inputs={"question": question})


def _accuracy(signature: Any, demos: Sequence[dspy.Example] = (), **body: Any) -> float:
    correct = 0
    for row in QUESTIONS:
        done = build_completion(
            {"model": "sim", "messages": _messages(signature, demos, row["question"]), **body}
        )
        assert done.correct is not None
        parsed = dspy.ChatAdapter().parse(
            dspy.ensure_signature(signature), done.payload["choices"][0]["message"]["content"]
        )
        assert (parsed["answer"] == row["answer"]) == done.correct
        correct += done.correct
    return correct / N


def _cot(signature: Any) -> Any:
    return dspy.ChainOfThought(signature).predict.signature


PLAIN = dspy.Signature("question -> answer")
PHRASED = PLAIN.with_instructions("Solve the question step by step and double-check the arithmetic.")


def test_zero_shot_accuracy_is_near_the_base() -> None:
    assert 0.35 <= _accuracy(PLAIN) <= 0.55


def test_worked_examples_raise_accuracy() -> None:
    zero_shot, four_demos = _accuracy(PLAIN), _accuracy(PLAIN, DEMOS)
    assert four_demos > zero_shot + 0.2
    assert 0.78 <= four_demos <= 0.92


def test_wrong_demos_do_not_help() -> None:
    wrong = [dspy.Example(question=d.question, answer=str(int(d.answer) + 1)) for d in DEMOS]
    assert abs(_accuracy(PLAIN, wrong) - _accuracy(PLAIN)) < 0.1


def test_instruction_phrases_raise_accuracy() -> None:
    assert _accuracy(PHRASED) > _accuracy(PLAIN) + 0.08


def test_chain_of_thought_adds_a_little_and_reasons_about_the_question() -> None:
    messages = _messages(_cot(PLAIN), [], "What is 2 + 3?")
    content = build_completion({"model": "sim", "messages": messages})
    parsed = dspy.ChatAdapter().parse(_cot(PLAIN), content.payload["choices"][0]["message"]["content"])
    assert "2 + 3" in parsed["reasoning"]
    assert 0.4 <= _accuracy(_cot(PLAIN)) <= 0.6


def test_the_same_request_gets_the_same_answer_and_seeds_draw_anew() -> None:
    messages = _messages(PLAIN, [], QUESTIONS[0]["question"])
    first = build_completion({"model": "sim", "messages": messages, "seed": 1})
    again = build_completion({"model": "sim", "messages": messages, "seed": 1})
    assert first.payload["choices"] == again.payload["choices"]
    outcomes = {
        build_completion({"model": "sim", "messages": messages, "seed": s}).correct for s in range(40)
    }
    assert outcomes == {True, False}


def test_json_adapter_requests_get_a_json_object_with_every_output_field() -> None:
    signature = _cot(PLAIN)
    messages = _messages(signature, DEMOS[:2], "What is 7 * 6?", adapter=dspy.JSONAdapter())
    done = build_completion(
        {"model": "sim", "messages": messages, "response_format": {"type": "json_object"}}
    )
    content = json.loads(done.payload["choices"][0]["message"]["content"])
    assert set(content) == {"reasoning", "answer"}
    assert done.demos == 2
    parsed = dspy.JSONAdapter().parse(signature, done.payload["choices"][0]["message"]["content"])
    assert (parsed["answer"] == "42") == done.correct


def test_json_demos_count_as_worked_examples() -> None:
    messages = _messages(PLAIN, DEMOS, "What is 7 * 6?", adapter=dspy.JSONAdapter())
    assert read_prompt(messages, {"type": "json_object"}).correct_demos == 4


class Typed(dspy.Signature):
    """Classify and count."""

    question: str = dspy.InputField()
    label: Literal["alpha", "beta", "gamma"] = dspy.OutputField()
    count: int = dspy.OutputField()
    ok: bool = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    proposed_instruction: str = dspy.OutputField()


def test_unknown_fields_get_values_of_their_declared_types() -> None:
    messages = _messages(Typed, [], "Name a colour.")
    done = build_completion({"model": "sim", "messages": messages})
    parsed = dspy.ChatAdapter().parse(Typed, done.payload["choices"][0]["message"]["content"])
    assert parsed["label"] in {"alpha", "beta", "gamma"}
    assert isinstance(parsed["count"], int) and isinstance(parsed["ok"], bool)
    assert isinstance(parsed["tags"], list) and parsed["tags"]
    assert done.correct is None


def test_proposed_instructions_vary_and_sometimes_carry_the_bonus_phrases() -> None:
    proposals = set()
    for seed in range(60):
        done = build_completion({"model": "sim", "messages": _messages(Typed, [], "Propose."), "seed": seed})
        parsed = dspy.ChatAdapter().parse(Typed, done.payload["choices"][0]["message"]["content"])
        proposals.add(parsed["proposed_instruction"])
    assert len(proposals) > 5
    assert any("step by step" in p for p in proposals)
    assert any("Double-check" in p for p in proposals)
    assert any("step by step" not in p and "Double-check" not in p for p in proposals)


def test_plain_chat_gets_a_plain_answer() -> None:
    done = build_completion({"model": "sim", "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
    text = done.payload["choices"][0]["message"]["content"]
    assert (text == "4") == done.correct
    other = build_completion({"model": "sim", "messages": [{"role": "user", "content": "Hi there"}]})
    assert "simulated" in other.payload["choices"][0]["message"]["content"]


def test_usage_counts_about_four_characters_per_token() -> None:
    messages = _messages(PLAIN, DEMOS, "What is 1 + 1?")
    done = build_completion({"model": "sim", "messages": messages})
    usage = done.payload["usage"]
    chars = sum(len(m["content"]) for m in messages)
    assert usage["prompt_tokens"] == pytest.approx(chars / 4, abs=1)
    content = done.payload["choices"][0]["message"]["content"]
    assert usage["completion_tokens"] == pytest.approx(len(content) / 4, abs=1)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    messages = _messages(_cot(PLAIN), [], "What is 1 + 1?")
    done = build_completion({"model": "sim", "messages": messages, "max_tokens": 3})
    choice = done.payload["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"]) == 12


def test_n_gives_n_deterministic_choices() -> None:
    body = {"model": "sim", "messages": _messages(_cot(PLAIN), [], "What is 9 + 9?"), "n": 3}
    choices = build_completion(body).payload["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert choices == build_completion(body).payload["choices"]
