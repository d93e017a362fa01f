"""The simulated LM writes code for RLM's and ProgramOfThought's prompts on the arithmetic task."""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import pytest

import dspex
from dspex.adapters import ChatAdapter
from dspex.modules.code_act import CodeAct
from dspex.modules.program_of_thought import ProgramOfThought
from dspex.modules.rlm import RLM
from dspex.primitives.code_interpreter import FinalOutput
from dspex.primitives.repl_types import REPLHistory, REPLVariable
from dspex.signatures import ensure_signature
from dspex.testing._code import ABUSE_KINDS
from dspex.testing._prompt import read_prompt, sections
from dspex.testing._respond import abusive_answer, compose_answer

HASH = "0" * 32


def reply(signature: Any, inputs: dict[str, Any]) -> dict[str, str]:
    messages = ChatAdapter().format(signature, demos=[], inputs=inputs)
    return sections(compose_answer(read_prompt(messages, None), HASH).content)


def rlm_step(signature: str, question: str) -> dict[str, str]:
    rlm = RLM(signature, max_iters=3)
    variables = REPLVariable.from_value("question", question).format()
    inputs = {"variables_info": variables, "repl_history": REPLHistory(), "iteration": "1/3"}
    return reply(rlm.generate_action.signature, inputs)


def run_submitted(code: str, question: str) -> Any:
    """Run the code as the sandbox would (its SUBMIT ends the step) and return what it submitted."""
    submitted: list[Any] = []
    body = code.strip().removeprefix("```python").removesuffix("```")
    namespace = {"question": question, "SUBMIT": lambda **kw: submitted.append(FinalOutput(kw)), "print": id}
    exec(body, namespace)
    return submitted[0].output


@pytest.mark.parametrize(
    ("signature", "question", "submitted"),
    [
        ("question -> answer: int", "What is 12 * 7?", {"answer": 84}),
        ("question -> answer", "What is 12 - 70?", {"answer": "-58"}),
    ],
)
def test_rlm_gets_code_that_computes_and_submits(signature: str, question: str, submitted: Any) -> None:
    step = rlm_step(signature, question)
    assert "SUBMIT(answer=" in step["code"]
    assert run_submitted(step["code"], question) == submitted
    assert rlm_step(signature, question) == step  # deterministic


def test_rlm_without_an_arithmetic_question_gets_the_usual_values() -> None:
    assert "SUBMIT" not in rlm_step("question -> answer", "Who wrote Hamlet?")["code"]


def test_program_of_thought_code_and_answer_from_its_output() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pot = ProgramOfThought("question -> answer: int")
    code = reply(pot.code_generate.predict.signature, {"question": "What is 6 * 7?"})
    assert code["generated_code"] == "```python\nresult = 6 * 7\n```"
    inputs = {"question": "What is 6 * 7?", "final_generated_code": "result = 6 * 7", "code_output": "42"}
    assert reply(pot.generate_output.predict.signature, inputs)["answer"] == "42"


def abused(signature: str, question: str, request_hash: str, fraction: float) -> dict[str, str] | None:
    rlm = RLM(signature, max_iters=3)
    variables = REPLVariable.from_value("question", question).format()
    inputs = {"variables_info": variables, "repl_history": REPLHistory(), "iteration": "1/3"}
    messages = ChatAdapter().format(rlm.generate_action.signature, demos=[], inputs=inputs)
    answer = abusive_answer(read_prompt(messages, None), request_hash, fraction, 4321)
    return None if answer is None else sections(answer.content)


def test_code_abuse_picks_every_kind_by_hash_and_only_for_code_steps() -> None:
    hashes = [hashlib.md5(str(i).encode()).hexdigest() for i in range(400)]
    steps = [abused("question -> answer", "What is 3 + 4?", h, 1.0) for h in hashes]
    codes = [step["code"] for step in steps if step is not None]
    assert len(codes) == len(hashes)
    for kind, code in ABUSE_KINDS.items():
        assert sum(code.format(port=4321) in c for c in codes) > 30, kind
    assert "127.0.0.1:4321" in next(c for c in codes if "fetch" in c)
    # the fraction is honoured (by hash), and prompts that are no code step are left alone
    assert 150 < sum(abused("question -> answer", "What is 3 + 4?", h, 0.5) is not None for h in hashes) < 250
    assert abused("question -> answer", "What is 3 + 4?", HASH, 0.0) is None
    messages = ChatAdapter().format(
        ensure_signature("question -> answer"), demos=[], inputs={"question": "x"}
    )
    plain = read_prompt(messages, None)
    assert abusive_answer(plain, HASH, 1.0, 4321) is None


def test_code_act_extract_answers_with_the_last_code_output() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        act = CodeAct("question -> answer: int", tools=[], max_iters=3)
    # not the right answer (42), so only reading the trajectory's last output gives it
    steps = {"generated_code_0": "result = 6 * 8", "code_output_0": "48", "code_output_1": "41"}
    signature = act.extractor.predict.signature
    for name in steps:  # CodeAct shows its trajectory as fields of their own, as DSPy does
        signature = signature.append(name, dspex.InputField(), type_=str)
    extract = reply(signature, {"question": "What is 6 * 7?", "trajectory": "", **steps})
    assert extract["answer"] == "41"
