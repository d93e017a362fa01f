"""The simulated LM writes code for RLM's and ProgramOfThought's prompts on the arithmetic task."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from dspex.adapters import ChatAdapter
from dspex.modules.program_of_thought import ProgramOfThought
from dspex.modules.rlm import RLM
from dspex.primitives.code_interpreter import FinalOutput
from dspex.primitives.repl_types import REPLHistory, REPLVariable
from dspex.testing._prompt import read_prompt, sections
from dspex.testing._respond import compose_answer

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
