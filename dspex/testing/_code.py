"""The simulated LM as a programmer: code for RLM's and ProgramOfThought's prompts on arithmetic.

- An RLM action step (outputs ``reasoning`` and ``code``, inputs ``variables_info`` and
  ``repl_history``) whose REPL holds an arithmetic question in a variable gets code that reads the
  question from that variable, computes the answer in the sandbox, prints it and calls
  ``SUBMIT(<output>=...)`` (an ``int`` where the prompt asks for one, else its text).
- A ProgramOfThought code step (output ``generated_code``) on an arithmetic question gets
  ``result = <left> <op> <right>`` in a fenced block (the module appends ``result``, so its value is
  the output); the answer step (input ``code_output``) answers with the number the code produced.
  CodeAct's steps get the same code, and its extract step answers with the last ``code_output_<n>``
  of its trajectory.

The code is always right: the accuracy model applies to answers the LM writes itself, not to what
the sandbox computed. Everything is a function of the prompt, so the same request gets the same code.

With the server's ``code_abuse`` knob set, a fraction of code steps (chosen by request hash, so
reproducible) instead get code a sandbox must contain (:data:`ABUSE_KINDS`): an endless loop, a
gigabyte allocation, a hundred megabytes of output, a read of ``/etc/passwd`` and a ``fetch`` to
``127.0.0.1:<code_abuse_port>`` (a listener a test can count connections on).
"""

from __future__ import annotations

import json
import re
from typing import Any

from dspex.testing._prompt import PromptView
from dspex.testing.task import Question, parse_question

__all__ = ["ABUSE_KINDS", "abusive_code_step", "code_output_number", "code_step"]

# DSPy's REPL variable listing (the chat adapter may indent it inside «« »» quotes)
_VARIABLE = re.compile(r"Variable: `(\w+)`.*?Preview:\s*```[^\n]*\n(.*?)\n\s*```", re.DOTALL)
_SUBMIT_NAMES = re.compile(r"`SUBMIT\(([\w, ]*)\)`")
_INT_NOTE = re.compile(r"- \{(\w+)\}\s+# note: the value you produce must be a single int value")
_RLM_INPUTS = ("variables_info", "repl_history")
_RLM_OUTPUTS = ("reasoning", "code")
_POT_CODE = "generated_code"
_POT_OUTPUT = "code_output"
_STEP_OUTPUT = re.compile(r"code_output_(\d+)")

# Runs in the sandbox: parse the question held in the REPL variable, compute, print and submit.
_RLM_CODE = """\
```python
import re
match = re.search(r"(-?\\d+)\\s*([-+*])\\s*(-?\\d+)", str({variable}))
left, op, right = int(match.group(1)), match.group(2), int(match.group(3))
result = left + right if op == "+" else left - right if op == "-" else left * right
print(result)
SUBMIT({output}={value})
```"""


def _rlm_question(view: PromptView) -> tuple[str, Question] | None:
    """The REPL variable holding an arithmetic question, and the question."""
    for name, preview in _VARIABLE.findall(view.inputs.get("variables_info", "")):
        question = parse_question(preview.strip())
        if question is not None:
            return name, question
    return None


def _rlm_step(view: PromptView, outputs: list[str]) -> dict[str, Any] | None:
    if not all(name in outputs for name in _RLM_OUTPUTS) or not all(k in view.inputs for k in _RLM_INPUTS):
        return None
    found = _rlm_question(view)
    instructions = view.system.instructions if view.system else ""
    submit = _SUBMIT_NAMES.search(instructions)
    if found is None or submit is None or not submit.group(1).strip():
        return None
    variable, question = found
    output = submit.group(1).split(",")[0].strip()
    value = "result" if output in _INT_NOTE.findall(instructions) else "str(result)"
    expression = f"{question.left} {question.op} {question.right}"
    reasoning = f"`{variable}` asks for {expression}: compute it in the REPL and submit it."
    return {"reasoning": reasoning, "code": _RLM_CODE.format(variable=variable, output=output, value=value)}


def _pot_step(view: PromptView, outputs: list[str]) -> dict[str, Any] | None:
    if _POT_CODE not in outputs or view.question is None:
        return None
    question = view.question
    code = f"```python\nresult = {question.left} {question.op} {question.right}\n```"
    reasoning = f"The question asks for {question.left} {question.op} {question.right}; Python computes it."
    return {"reasoning": reasoning, _POT_CODE: code}


# What each kind of abusive code does; the sandbox must turn every one into an error observation.
ABUSE_KINDS: dict[str, str] = {
    "loop": "while True:\n    pass",
    "memory": "hoard = b'x' * (1024 ** 3)\nprint(len(hoard))",
    "output": "print('x' * 100_000_000)",
    "file": "import js\nprint(js.Deno.readTextFileSync('/etc/passwd'))",
    "network": "import js\nresponse = await js.fetch('http://127.0.0.1:{port}/')\nprint(response.status)",
}


def abusive_code_step(
    view: PromptView, request_hash: str, kind_draw: float, port: int
) -> dict[str, Any] | None:
    """An RLM or ProgramOfThought code step whose code is abuse of a kind picked by ``kind_draw``
    (a fraction in [0, 1)), or None when the prompt is no code step."""
    step = code_step(view)
    if step is None:
        return None
    kinds = sorted(ABUSE_KINDS)
    kind = kinds[min(len(kinds) - 1, int(kind_draw * len(kinds)))]
    code = f"```python\n{ABUSE_KINDS[kind].format(port=port)}\n```"
    field = "code" if "code" in step else _POT_CODE
    reasoning = f"Let me try something else first ({kind}, {request_hash[:8]})."
    return {**step, field: code, "reasoning": reasoning}


def code_step(view: PromptView) -> dict[str, Any] | None:
    """The outputs of an RLM or ProgramOfThought code step on an arithmetic question, else None."""
    outputs = [decl.name for decl in view.system.outputs] if view.system else []
    return _rlm_step(view, outputs) or _pot_step(view, outputs)


def _last_step_output(inputs: dict[str, str]) -> str | None:
    steps = [int(match.group(1)) for name in inputs if (match := _STEP_OUTPUT.fullmatch(name))]
    return inputs[f"{_POT_OUTPUT}_{max(steps)}"] if steps else None


def code_output_number(view: PromptView) -> int | None:
    """The number a ProgramOfThought program printed or submitted (``code_output``), or the last
    one a CodeAct trajectory holds (``code_output_<step>``), else None."""
    text = view.inputs.get(_POT_OUTPUT)
    if text is None:  # CodeAct's extract step: its trajectory's last code output
        text = _last_step_output(view.inputs)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and len(value) == 1:  # a SUBMIT of one field
        value = next(iter(value.values()))
    if isinstance(value, str):
        value = value.strip()
    try:
        return int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
