"""Asking an LM to write text for an optimizer (an instruction, a rule): one retry, then a skip.

    proposal = await propose_text(proposer, {"basic_instruction": text}, field="proposed_instruction",
                                  rollout_id=7, lm=prompt_model)
    if proposal.text is None:
        run.record(Trial(step=..., kind="proposal", label=..., error=proposal.error))

Instruction optimizers ask for many proposals; an LM answer that cannot be parsed, or that parses to
nothing usable, must not end a run that may have been going for hours. The second attempt is a
fresh draw (the next rollout id at temperature 1.0), so neither a cache nor a deterministic LM can
hand back the same broken answer; after it the proposal is skipped and the caller records why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from dspex.errors import AdapterParseError
from dspex.lm import LM
from dspex.optimizers.executor import rollout_copy
from dspex.primitives import Module
from dspex.settings import context

__all__ = ["PROPOSAL_ATTEMPTS", "Proposal", "clean_proposal", "propose_text"]

# The first answer and one retry.
PROPOSAL_ATTEMPTS = 2

# What LMs wrap proposals in: a leading label ("Proposed Instruction:"), quotes, code fences.
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:proposed\s+)?(?:instruction|rule|advice)s?(?:\*\*)?\s*:\s*", re.I)
_FENCE = re.compile(r"^```[a-z]*\s*|\s*```$")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"


@dataclass(frozen=True)
class Proposal:
    """What a proposal request gave: the text, or None and why it was skipped."""

    text: str | None
    attempts: int
    error: str | None = None

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
) -> Proposal:
    """Run ``proposer`` on ``inputs`` and return its cleaned ``field``; retried on unusable output.

    ``rollout_id`` makes the request distinct (each proposal of a run gets its own); the retry uses
    ``rollout_id + 1_000_003`` so it never collides with another proposal's first attempt. Errors
    other than unusable output (the LM down, a bad key) propagate: they are not the proposal's fault.
    """
    error = "no attempt made"
    for attempt in range(attempts):
        draw = rollout_copy(proposer, rollout_id + attempt * 1_000_003)
        try:
            with context(lm=lm) if lm is not None else nullcontext():
                prediction = await draw.acall(**inputs)
        except AdapterParseError as exc:
            error = f"unparseable proposal: {exc}"
            continue
        text = clean_proposal(prediction.get(field))
        if text is not None:
            return Proposal(text=text, attempts=attempt + 1)
        error = f"empty proposal in field {field!r}"
    return Proposal(text=None, attempts=attempts, error=f"{error} (after {attempts} attempts)")
