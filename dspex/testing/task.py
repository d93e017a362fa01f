"""The simulated LM's arithmetic task: datasets, and how the prompt decides the accuracy.

Questions look like ``"What is 347 + 28?"`` (also ``-`` and ``*`` with small numbers) and the label is
the integer answer as text (``"375"``). :func:`arithmetic_rows` gives plain dicts,
:func:`arithmetic_dataset` the same rows as :class:`dspex.Example` objects with ``question`` as input.

The accuracy model (optimizers and their tests rely on it; change it only with them)
-----------------------------------------------------------------------------------
For a request whose question is an arithmetic question, the simulated LM answers correctly with
probability ``p``::

    p = 0.45                                   BASE_ACCURACY, a zero-shot Predict
      + 0.10 x min(correct_demos, 4)           DEMO_BONUS per worked example, up to MAX_BONUS_DEMOS
      + 0.08 x instruction phrases present     INSTRUCTION_BONUS per phrase in INSTRUCTION_PHRASES
      + 0.04 if the outputs ask for `reasoning` REASONING_BONUS (ChainOfThought)
      + 0.35 if a secret phrase is present     SECRET_PHRASE_BONUS, any phrase of SECRET_PHRASES
      + the fine-tuning gain of the model      finetune_gain(), for ``ft:`` models the simulated
                                               fine-tuning API made (dspex.testing._finetune)
    p = min(p, 0.97)                           MAX_ACCURACY

- ``correct_demos`` counts the demo pairs (earlier user/assistant messages) whose user message asks an
  arithmetic question and whose assistant message answers it correctly (in the ``answer`` field, else
  the last output field; chat ``[[ ## answer ## ]]`` sections or a JSON object).
- The instruction phrases are searched, case-insensitively, in the signature's instructions only (the
  text after "your objective is:" in the system message), never in field descriptions:
  ``"step by step"`` and ``"double-check"`` (``"double check"`` counts too).

- The fine-tuning gain (a simulation of training, not a model of it) is fixed when the job validates
  its training file: each chat record whose last user message asks an arithmetic question counts as
  correct when the assistant message after it answers it correctly, else as wrong; the gain is
  ``FINETUNE_GAIN_PER_EXAMPLE x (correct - wrong)``, at least 0 and at most ``FINETUNE_MAX_GAIN``.
  So correct examples raise the tuned model's accuracy and a file with corrupted labels gives no gain.

- The secret phrases (GEPA's task, :mod:`dspex.testing.gepa_task`) are searched the same way. No
  proposal of the simulated LM ever contains one on its own: a reflection that reads one in the
  metric's feedback (``say "<phrase>"``) copies it into the new instruction. Which phrase a task's
  feedback names is drawn from its seed (:func:`secret_phrase`), so it is found only by reading the
  feedback, never from scores alone.

Whether one request is answered correctly is deterministic: the content id of the request's
``model``, ``messages``, ``seed`` and ``temperature`` is mapped to ``u`` in [0, 1) and the answer is
correct when ``u < p``. A wrong answer is a deterministic near miss, off by 1 to 10. So a prompt with
p = 0.85 is right on about 85% of the questions, and two rollouts (different ``seed``) are two
independent draws.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dspex.errors import ConfigurationError

if TYPE_CHECKING:
    from dspex.primitives import Example

__all__ = [
    "BASE_ACCURACY",
    "DEMO_BONUS",
    "FINETUNE_GAIN_PER_EXAMPLE",
    "FINETUNE_MAX_GAIN",
    "INSTRUCTION_BONUS",
    "INSTRUCTION_PHRASES",
    "MAX_ACCURACY",
    "MAX_BONUS_DEMOS",
    "REASONING_BONUS",
    "SECRET_PHRASES",
    "SECRET_PHRASE_BONUS",
    "Question",
    "accuracy",
    "arithmetic_dataset",
    "arithmetic_rows",
    "finetune_gain",
    "instruction_phrases_in",
    "near_miss",
    "parse_question",
    "secret_phrase",
    "secret_phrase_in",
]

BASE_ACCURACY = 0.45
DEMO_BONUS = 0.10
MAX_BONUS_DEMOS = 4
INSTRUCTION_BONUS = 0.08
REASONING_BONUS = 0.04
MAX_ACCURACY = 0.97
# each entry is one bonus; any spelling in the tuple earns it
INSTRUCTION_PHRASES: tuple[tuple[str, ...], ...] = (
    ("step by step",),
    ("double-check", "double check"),
)

FINETUNE_GAIN_PER_EXAMPLE = 0.02
FINETUNE_MAX_GAIN = 0.30
SECRET_PHRASE_BONUS = 0.35
SECRET_PHRASES: tuple[str, ...] = (
    "mind the carried digits",
    "read the operator twice",
    "align the columns first",
    "count the borrows",
    "work from the units digit",
    "keep a running tally",
    "trace each column",
    "recite the times table",
)

_QUESTION = re.compile(r"^\s*(?:what is\s+)?(-?\d+)\s*([-+*])\s*(-?\d+)\s*\??\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Question:
    """A parsed arithmetic question."""

    left: int
    op: str
    right: int

    @property
    def answer(self) -> int:
        if self.op == "+":
            return self.left + self.right
        if self.op == "-":
            return self.left - self.right
        return self.left * self.right

    @property
    def text(self) -> str:
        return f"What is {self.left} {self.op} {self.right}?"


def parse_question(text: str) -> Question | None:
    """The arithmetic question ``text`` asks (the whole text must be one), else None."""
    match = _QUESTION.match(text)
    if match is None:
        return None
    return Question(int(match.group(1)), match.group(2), int(match.group(3)))


def instruction_phrases_in(instructions: str) -> int:
    """How many of the bonus phrases the instructions mention."""
    lowered = instructions.lower()
    return sum(any(spelling in lowered for spelling in group) for group in INSTRUCTION_PHRASES)


def secret_phrase(seed: int) -> str:
    """The secret phrase the feedback of the task with this seed names (the same for a seed)."""
    return random.Random(f"dspex-secret-phrase-{seed}").choice(SECRET_PHRASES)


def secret_phrase_in(instructions: str) -> bool:
    """Whether the instructions carry one of the secret phrases."""
    lowered = instructions.lower()
    return any(phrase in lowered for phrase in SECRET_PHRASES)


def finetune_gain(correct: int, wrong: int) -> float:
    """The accuracy a simulated fine-tuning job adds, from its file's correct and wrong examples."""
    return min(FINETUNE_MAX_GAIN, max(0.0, FINETUNE_GAIN_PER_EXAMPLE * (correct - wrong)))


def accuracy(
    *,
    correct_demos: int,
    instruction_phrases: int,
    reasoning: bool,
    secret_phrase: bool = False,
    tuned_gain: float = 0.0,
) -> float:
    """The probability that the simulated LM answers correctly, per the module's accuracy model
    (``tuned_gain``: the model's :func:`finetune_gain`, 0 for a model that was not fine-tuned)."""
    p = BASE_ACCURACY + tuned_gain + DEMO_BONUS * min(correct_demos, MAX_BONUS_DEMOS)
    p += INSTRUCTION_BONUS * instruction_phrases
    if secret_phrase:
        p += SECRET_PHRASE_BONUS
    if reasoning:
        p += REASONING_BONUS
    return min(p, MAX_ACCURACY)


def near_miss(answer: int, draw: int) -> int:
    """A deterministic wrong answer 1 to 10 away from ``answer``; ``draw`` is any non-negative int."""
    offset = 1 + draw % 10
    return answer + offset if (draw >> 8) % 2 else answer - offset


def _random_question(rng: random.Random) -> Question:
    kind = rng.random()
    if kind < 0.6:
        return Question(rng.randint(10, 999), "+", rng.randint(1, 999))
    if kind < 0.85:
        left = rng.randint(20, 999)
        return Question(left, "-", rng.randint(1, left))
    return Question(rng.randint(2, 30), "*", rng.randint(2, 12))


def _distinct_questions(n: int, rng: random.Random) -> Iterable[Question]:
    seen: set[Question] = set()
    while len(seen) < n:
        question = _random_question(rng)
        if question not in seen:
            seen.add(question)
            yield question


def arithmetic_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` distinct arithmetic questions as ``{"question": ..., "answer": ...}``, the same for a seed."""
    if n < 0:
        raise ConfigurationError(f"arithmetic_rows needs n >= 0, got {n}")
    rng = random.Random(f"dspex-arithmetic-{seed}")
    return [{"question": q.text, "answer": str(q.answer)} for q in _distinct_questions(n, rng)]


def arithmetic_dataset(n: int, seed: int = 0) -> list[Example]:
    """:func:`arithmetic_rows` as examples whose input is ``question`` and label ``answer``."""
    # imported here, not at the top: the simulated LM server imports this module for the accuracy
    # model and must start (and keep answering) without loading the programming model
    from dspex.primitives import Example

    return [Example(**row).with_inputs("question") for row in arithmetic_rows(n, seed)]
