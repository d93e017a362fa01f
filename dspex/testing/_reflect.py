"""The simulated LM as a reflection LM: its answer to GEPA's reflection requests (the proposals).

Two forms are recognised: gepa's reflection prompt (dspex's proposer with ``prompt_template``),
which shows the current instruction between the first pair of triple backticks, then runs with the
metric's feedback, and asks for a new instruction within triple backticks; and DSPy 3.4.1's
proposer (dspex's default too), a ``Predict`` with the inputs ``current_instruction`` and
``examples_with_feedback`` and the output ``new_instruction``. Either way the new instruction is
the current one with one addition:

- when the feedback says ``say "<phrase>"`` (the phrase task's feedback, :mod:`dspex.testing.gepa_task`),
  the first such phrase the instruction lacks: ``Always <phrase>.``;
- otherwise a generic revision drawn from what the reflection is shown: "Think step by step." or
  "Double-check the arithmetic." (each with some chance, the accuracy model's ordinary bonus
  phrases) or a plain "Be precise." with a revision number. It never contains a secret phrase, so
  scores alone never find one.

The draw of a generic revision depends on the information in the request, not on its wording: the
current instruction and the numbers of the examples with feedback (their questions, the answers
given, the expected answers, the scores), in order, leaving out markdown heading lines (which number
the examples); a request whose examples hold no number uses their whole text. Why: a real
reflection LM answers the information it is given, and a draw from the hash of the whole request
would make the proposer's prompt wording (its signature's docstring, its field descriptions, JSON or
markdown) act as a random seed, so that two proposers showing the same instruction and the same
feedback got unrelated revisions and a comparison of two GEPA implementations measured their
prompts' wording. With the draw on the content, proposers that show the same things get the same
proposal, whoever wrote their prompts.

DSPy's proposer (and dspex's) with ``max_chars`` may also ask to shorten a draft: inputs
``instruction`` and ``length_limit`` (its first number is the limit), output
``shortened_instruction``. The simulation keeps whole sentences, the ``Always ...`` ones (the rules
the feedback taught) first and the rest in order while they fit, then cuts words if even the rules
are too long. Without a number in ``length_limit`` the instruction comes back as it was.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

__all__ = ["content_draw", "is_reflection_prompt", "reflect", "reflect_fields", "revise", "shorten"]

_MARKER = "I provided an assistant with the following instructions"
_BLOCK = re.compile(r"```\n?(.*?)\n?```", re.DOTALL)
# in the feedback as written, or inside a JSON string (DSPy's form shows the examples as JSON)
_HINT = re.compile(r'say \\?"([^"\\\n]{1,80})\\?"')
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_GENERIC_CHANCE = 30  # percent, for each of the two ordinary bonus phrases
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def is_reflection_prompt(text: str) -> bool:
    """Whether ``text`` is gepa's reflection prompt."""
    return _MARKER in text and "```" in text


def reflect(prompt: str) -> str:
    """The new instruction, within triple backticks (see the module)."""
    blocks = list(_BLOCK.finditer(prompt))
    current = blocks[0].group(1) if blocks else ""
    # the examples: gepa's prompt shows them in the second block, else whatever follows the first
    shown = blocks[1].group(1) if len(blocks) > 1 else prompt[blocks[0].end() :] if blocks else prompt
    return f"```\n{revise(current, shown)}\n```"


def reflect_fields(inputs: Mapping[str, str], outputs: Sequence[str]) -> dict[str, str] | None:
    """DSPy's proposer form: ``{"new_instruction": ...}`` (or ``{"shortened_instruction": ...}``
    for its shortening request), or None for any other request."""
    if "shortened_instruction" in outputs and "instruction" in inputs:
        limit = re.search(r"\d+", inputs.get("length_limit", ""))
        text = inputs["instruction"].strip()
        return {"shortened_instruction": shorten(text, int(limit.group())) if limit else text}
    if "new_instruction" not in outputs or "current_instruction" not in inputs:
        return None
    feedback = inputs.get("examples_with_feedback", "")
    return {"new_instruction": revise(inputs["current_instruction"], feedback)}


def revise(current: str, feedback: str) -> str:
    """``current`` with the first phrase ``feedback`` asks for and it lacks, else a generic revision
    drawn from ``current`` and ``feedback`` (:func:`content_draw`)."""
    current = current.strip() or "Answer the question."
    lowered = current.lower()
    hints = [hint for hint in _HINT.findall(feedback) if hint.lower() not in lowered]
    if hints:
        return f"{current} Always {hints[0]}."
    return f"{current}{_revision(lowered, content_draw(current, feedback))}"


def content_draw(current: str, examples: str) -> int:
    """An int >= 0 from what a reflection is shown (see the module): the instruction and the
    examples' numbers in order, or the examples' text when they hold none."""
    # markdown headings ("# Example 2") number the examples, which is format, not content
    body = "\n".join(line for line in examples.splitlines() if not line.lstrip().startswith("#"))
    numbers = _NUMBER.findall(body)
    shown = " ".join(numbers) if numbers else examples.strip()
    digest = hashlib.sha256(f"{current.strip()}\n{shown}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


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
