"""The simulated LM's ``garble`` knob: a reproducible fraction of answers in no adapter's format."""

from __future__ import annotations

import json
from typing import Any

import dspy
import pytest

from dspex.testing import arithmetic_rows
from dspex.testing._completion import build_completion
from dspex.testing._server import SimLMConfig

PLAIN = dspy.Signature("question -> answer")
PROPOSER = dspy.Signature("basic_instruction -> proposed_instruction, proposed_prefix_for_output_field")
QUESTIONS = [row["question"] for row in arithmetic_rows(200, seed=5)]


def _body(signature: Any, inputs: dict[str, str], seed: int = 0) -> dict[str, Any]:
    messages = dspy.ChatAdapter().format(signature, demos=[], inputs=inputs)
    return {"model": "sim", "messages": messages, "seed": seed}


def _content(body: dict[str, Any], **knobs: Any) -> str:
    return str(build_completion(body, **knobs).payload["choices"][0]["message"]["content"])


def _parses(signature: Any, text: str) -> bool:
    try:
        dspy.ChatAdapter().parse(signature, text)
    except Exception:
        return False
    return True


def test_off_by_default_and_answers_are_unchanged_when_off() -> None:
    assert SimLMConfig().garble == 0.0 and SimLMConfig().garble_fields is None
    for question in QUESTIONS[:20]:
        body = _body(PLAIN, {"question": question})
        assert _content(body) == _content(body, garble=0.0, garble_fields="instruction")


def test_a_reproducible_fraction_of_answers_cannot_be_parsed() -> None:
    bodies = [_body(PLAIN, {"question": q}) for q in QUESTIONS]
    garbled = [not _parses(PLAIN, _content(b, garble=0.3)) for b in bodies]
    assert 0.2 < sum(garbled) / len(garbled) < 0.4
    assert garbled == [
        not _parses(PLAIN, _content(b, garble=0.3)) for b in bodies
    ]  # same requests, same picks
    assert all(not _parses(PLAIN, _content(b, garble=1.0)) for b in bodies[:20])


def test_garbled_task_answers_count_as_wrong_and_json_mode_gets_no_json() -> None:
    body = _body(PLAIN, {"question": QUESTIONS[0]})
    assert build_completion(body, garble=1.0).correct is False
    json_body = {**body, "response_format": {"type": "json_object"}}
    with pytest.raises(json.JSONDecodeError):
        json.loads(_content(json_body, garble=1.0))


def test_garble_fields_limits_it_to_signatures_with_such_an_output() -> None:
    task = _body(PLAIN, {"question": QUESTIONS[0]})
    assert _parses(PLAIN, _content(task, garble=1.0, garble_fields="instruction"))
    proposal = _body(PROPOSER, {"basic_instruction": "Answer the question."})
    assert _parses(PROPOSER, _content(proposal, garble=0.0, garble_fields="instruction"))
    assert not _parses(PROPOSER, _content(proposal, garble=1.0, garble_fields="instruction"))
