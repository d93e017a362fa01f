"""The simulated LM's advice (Refine's hints, SIMBA's rules) sometimes carries the task's bonus phrases,
so that a rule appended to the instructions can change the accuracy, as a proposed instruction can."""

from __future__ import annotations

import json
import re
from typing import Any

from dspex.adapters import ChatAdapter
from dspex.optimizers.simba_rules import WriteRules, parse_rules
from dspex.testing._completion import build_completion
from dspex.testing.task import instruction_phrases_in

PATHS = ["draft", "check"]
N = 200


def _rule_request(seed: int) -> dict[str, str]:
    inputs: dict[str, Any] = {name: "x" for name in WriteRules.input_fields}
    inputs["module_names"] = PATHS
    body = {"model": "sim", "messages": ChatAdapter().format(WriteRules, [], inputs), "seed": seed}
    first = build_completion(body)
    again = build_completion(body)
    content = first.payload["choices"][0]["message"]["content"]
    assert content == again.payload["choices"][0]["message"]["content"]  # deterministic per request
    assert first.correct is None  # not an arithmetic answer
    advice = ChatAdapter().parse(WriteRules, content)["advice"]
    rules = parse_rules(advice, PATHS)
    assert rules is not None and set(rules) == set(PATHS)
    return rules


def test_rules_carry_each_bonus_phrase_about_a_third_of_the_time() -> None:
    rules = [_rule_request(seed)["draft"] for seed in range(N)]
    step = sum("step by step" in rule for rule in rules) / N
    check = sum("double-check" in rule for rule in rules) / N
    neither = sum(instruction_phrases_in(rule) == 0 for rule in rules) / N
    assert 0.2 <= step <= 0.5 and 0.2 <= check <= 0.5, (step, check)
    assert 0.25 <= neither <= 0.6, neither
    assert any(instruction_phrases_in(rule) == 2 for rule in rules)
    # still recognisably the simulation's advice, the same for every module of one request
    assert all(re.fullmatch(r"Recompute the answer[^\"\n]*\(simulated advice \d{4}\)\.", r) for r in rules)


def test_every_module_of_a_request_gets_the_same_advice() -> None:
    for seed in range(20):
        rules = _rule_request(seed)
        assert rules["draft"] == rules["check"], json.dumps(rules)
