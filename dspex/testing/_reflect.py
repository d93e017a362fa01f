"""The simulated LM as a reflection LM: its answer to GEPA's reflection requests (the proposals).

Two forms are recognised: gepa's reflection prompt (dspex.GEPA's default proposer), which shows the
current instruction between the first pair of triple backticks, then runs with the metric's
feedback, and asks for a new instruction within triple backticks; and DSPy 3.4.1's proposer, a
``Predict`` with the inputs ``current_instruction`` and ``examples_with_feedback`` and the output
``new_instruction``. Either way the new instruction is the current one with one addition:

- when the feedback says ``say "<phrase>"`` (the phrase task's feedback, :mod:`dspex.testing.gepa_task`),
  the first such phrase the instruction lacks: ``Always <phrase>.``;
- otherwise a generic revision drawn from the request: "Think step by step." or "Double-check the
  arithmetic." (each with some chance, the accuracy model's ordinary bonus phrases) or a plain
  "Be precise." with a revision number. It never contains a secret phrase, so scores alone never
  find one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["is_reflection_prompt", "reflect", "reflect_fields"]

_MARKER = "I provided an assistant with the following instructions"
_BLOCK = re.compile(r"```\n?(.*?)\n?```", re.DOTALL)
# in the feedback as written, or inside a JSON string (DSPy's form shows the examples as JSON)
_HINT = re.compile(r'say \\?"([^"\\\n]{1,80})\\?"')
_GENERIC_CHANCE = 30  # percent, for each of the two ordinary bonus phrases


def is_reflection_prompt(text: str) -> bool:
    """Whether ``text`` is gepa's reflection prompt."""
    return _MARKER in text and "```" in text


def reflect(prompt: str, draw: int) -> str:
    """The new instruction, within triple backticks (see the module); ``draw`` is any int >= 0."""
    block = _BLOCK.search(prompt)
    return f"```\n{revise(block.group(1) if block else '', prompt, draw)}\n```"


def reflect_fields(inputs: Mapping[str, str], outputs: Sequence[str], draw: int) -> dict[str, str] | None:
    """DSPy's proposer form: ``{"new_instruction": ...}``, or None for any other request."""
    if "new_instruction" not in outputs or "current_instruction" not in inputs:
        return None
    feedback = inputs.get("examples_with_feedback", "")
    return {"new_instruction": revise(inputs["current_instruction"], feedback, draw)}


def revise(current: str, feedback: str, draw: int) -> str:
    """``current`` with the first phrase ``feedback`` asks for and it lacks, else a generic revision."""
    current = current.strip() or "Answer the question."
    lowered = current.lower()
    hints = [hint for hint in _HINT.findall(feedback) if hint.lower() not in lowered]
    if hints:
        return f"{current} Always {hints[0]}."
    return f"{current}{_revision(lowered, draw)}"


def _revision(lowered: str, draw: int) -> str:
    if "step by step" not in lowered and draw % 100 < _GENERIC_CHANCE:
        return " Think step by step."
    if "double-check" not in lowered and (draw >> 7) % 100 < _GENERIC_CHANCE:
        return " Double-check the arithmetic."
    return f" Be precise (revision {draw % 1000:03d})."
