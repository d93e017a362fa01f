"""Asking an LM to write text for an optimizer (an instruction, a rule): one retry, then a skip.

    proposal = await propose_text(proposer, {"basic_instruction": text}, field="proposed_instruction",
                                  rollout_id=7, lm=prompt_model)
    if proposal.text is None:
        run.record(Trial(step=..., kind="proposal", label=..., error=proposal.error))

Instruction optimizers ask for many proposals; an LM answer that cannot be parsed, or that parses to
nothing usable, must not end a run that may have been going for hours. The second attempt is a
fresh draw (another rollout id, at the same temperature), so neither a cache nor a deterministic LM can
hand back the same broken answer; after it the proposal is skipped and the caller records why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from dspex.configuration import context
from dspex.errors import AdapterParseError
from dspex.lm import LM
from dspex.optimizers.executor import ROLLOUT_TEMPERATURE, rollout_copy
from dspex.primitives import Module

__all__ = ["PROPOSAL_ATTEMPTS", "Proposal", "clean_proposal", "propose_text"]

# The first answer and one retry.
PROPOSAL_ATTEMPTS = 2
# How much of a parse error's message a skipped proposal's record keeps.
_MAX_REASON = 300

# What LMs wrap proposals in: a leading label ("Proposed Instruction:"), quotes, code fences.
_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:(?:proposed|new|improved)\s+)?(?:instruction|rule|advice)s?\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*",
    re.I,
)
_FENCE = re.compile(r"^```[a-z]*\s*|\s*```$")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"


@dataclass(frozen=True)
class Proposal:
    """What a proposal request gave: the text, or None and why it was skipped.

    ``extras``: the other output fields asked for (``also=``), cleaned the same way; one that is
    missing or empty is None there (only the main field decides a retry).
    """

    text: str | None
    attempts: int
    error: str | None = None
    extras: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.text is None


def clean_proposal(value: Any) -> str | None:
    """The proposal text without its wrapping, or None when nothing usable is left."""
    if not isinstance(value, str):
        return None
    text = _FENCE.sub("", value.strip()).strip()
    text = _LABEL.sub("", text).strip().strip(_QUOTES).strip()
    return text or None


async def propose_text(
    proposer: Module,
    inputs: Mapping[str, Any],
    *,
    field: str,
    rollout_id: int,
    lm: LM | None = None,
    attempts: int = PROPOSAL_ATTEMPTS,
    temperature: float = ROLLOUT_TEMPERATURE,
    also: Sequence[str] = (),
) -> Proposal:
    """Run ``proposer`` on ``inputs`` and return its cleaned ``field``; retried on unusable output.

    ``rollout_id`` makes the request distinct (each proposal of a run gets its own); the retry uses
    ``rollout_id + 1_000_003`` so it never collides with another proposal's first attempt. Both are
    sent at ``temperature`` (COPRO's ``init_temperature``, say). ``also``: other output fields to
    return in ``Proposal.extras``. Errors other than unusable output (the LM down, a bad key)
    propagate: they are not the proposal's fault.
    """
    error = "no attempt made"
    for attempt in range(attempts):
        draw = rollout_copy(proposer, rollout_id + attempt * 1_000_003, temperature)
        try:
            with context(lm=lm) if lm is not None else nullcontext():
                prediction = await draw.acall(**inputs)
        except AdapterParseError as exc:
            error = f"unparseable proposal: {_first_line(exc)}"
            continue
        text = clean_proposal(prediction.get(field))
        if text is not None:
            extras = {name: clean_proposal(prediction.get(name)) for name in also}
            return Proposal(text=text, attempts=attempt + 1, extras=extras)
        error = f"empty proposal in field {field!r}"
    return Proposal(text=None, attempts=attempts, error=f"{error} (after {attempts} attempts)")


def _first_line(exc: Exception) -> str:
    # A parse error carries the whole raw answer; the history keeps a short reason.
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."
