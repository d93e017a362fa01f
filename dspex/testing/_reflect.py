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

DSPy's proposer (and dspex's) with ``max_chars`` may also ask to shorten a draft: inputs
``instruction`` and ``length_limit`` (its first number is the limit), output
``shortened_instruction``. The simulation keeps whole sentences, the ``Always ...`` ones (the rules
the feedback taught) first and the rest in order while they fit, then cuts words if even the rules
are too long. Without a number in ``length_limit`` the instruction comes back as it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["is_reflection_prompt", "reflect", "reflect_fields", "shorten"]

_MARKER = "I provided an assistant with the following instructions"
_BLOCK = re.compile(r"```\n?(.*?)\n?```", re.DOTALL)
# in the feedback as written, or inside a JSON string (DSPy's form shows the examples as JSON)
_HINT = re.compile(r'say \\?"([^"\\\n]{1,80})\\?"')
_GENERIC_CHANCE = 30  # percent, for each of the two ordinary bonus phrases
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def is_reflection_prompt(text: str) -> bool:
    """Whether ``text`` is gepa's reflection prompt."""
    return _MARKER in text and "```" in text


def reflect(prompt: str, draw: int) -> str:
    """The new instruction, within triple backticks (see the module); ``draw`` is any int >= 0."""
    block = _BLOCK.search(prompt)
    return f"```\n{revise(block.group(1) if block else '', prompt, draw)}\n```"


def reflect_fields(inputs: Mapping[str, str], outputs: Sequence[str], draw: int) -> dict[str, str] | None:
    """DSPy's proposer form: ``{"new_instruction": ...}`` (or ``{"shortened_instruction": ...}``
    for its shortening request), or None for any other request."""
    if "shortened_instruction" in outputs and "instruction" in inputs:
        limit = re.search(r"\d+", inputs.get("length_limit", ""))
        text = inputs["instruction"].strip()
        return {"shortened_instruction": shorten(text, int(limit.group())) if limit else text}
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


def shorten(instruction: str, limit: int) -> str:
    """``instruction`` within ``limit`` characters: whole sentences, ``Always ...`` ones first."""
    sentences = [part for part in _SENTENCE_END.split(instruction.strip()) if part]
    ranked = sorted(range(len(sentences)), key=lambda i: not sentences[i].startswith("Always "))
    kept: set[int] = set()
    for index in ranked:
        trial = " ".join(sentences[i] for i in sorted(kept | {index}))
        if len(trial) <= limit:
            kept.add(index)
    text = " ".join(sentences[i] for i in sorted(kept))
    if text:
        return text
    words = instruction.split()
    while words and len(" ".join(words)) > limit:
        words.pop()
    return " ".join(words)


def _revision(lowered: str, draw: int) -> str:
    if "step by step" not in lowered and draw % 100 < _GENERIC_CHANCE:
        return " Think step by step."
    if "double-check" not in lowered and (draw >> 7) % 100 < _GENERIC_CHANCE:
        return " Double-check the arithmetic."
    return f" Be precise (revision {draw % 1000:03d})."
