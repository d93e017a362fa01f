"""What COPRO asks its prompt model, and the small records it keeps between steps (in its checkpoint).

A *setting* is one predictor's ``(instruction, prefix of its last output field)``; a program is one
setting per predictor, so every candidate rebuilds from the student and a tuple of settings.
"""

from __future__ import annotations

import statistics
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ConfigDict

from dspex.primitives.module import Predictor
from dspex.signatures import InputField, OutputField, Signature

__all__ = [
    "INSTRUCTION_FIELD",
    "PREFIX_FIELD",
    "STAT_KEYS",
    "TOP_STATS",
    "FirstProposal",
    "ProposalFromAttempts",
    "Scored",
    "Setting",
    "as_setting",
    "attempts_text",
    "current_setting",
    "describe",
    "proposal_rollout_id",
    "summary",
]

INSTRUCTION_FIELD, PREFIX_FIELD = "proposed_instruction", "proposed_prefix_for_output_field"
TOP_STATS = 10  # DSPy's results_best summarises the ten best scores

Setting = tuple[str, str]  # one predictor's (instruction, prefix of its last output field)


class FirstProposal(Signature):
    """You improve the instructions given to a language model for one step of a program. Read the
    current instruction and write a better one that would make a capable model do the task well; a
    bold rewrite is welcome. Also write the short text that ends the prompt and leads into the answer."""

    basic_instruction: str = InputField(desc="the instruction as it is now")
    proposed_instruction: str = OutputField(desc="the improved instruction for the language model")
    proposed_prefix_for_output_field: str = OutputField(
        desc="the text at the very end of the prompt that helps the model start its answer"
    )


class ProposalFromAttempts(Signature):
    """You improve the instructions given to a language model for one step of a program. Below are
    instructions already tried with the validation score each reached, worst first and best last.
    Write a new instruction likely to score higher than all of them; a bold rewrite is welcome. Also
    write the short text that ends the prompt and leads into the answer."""

    attempted_instructions: str = InputField(desc="the attempts so far, in increasing order of score")
    proposed_instruction: str = OutputField(desc="the improved instruction for the language model")
    proposed_prefix_for_output_field: str = OutputField(
        desc="the text at the very end of the prompt that helps the model start its answer"
    )


@dataclass(frozen=True)
class Scored:
    """One evaluated candidate of one predictor: its setting, the program it was scored in, the score."""

    # validated as part of a checkpoint (dspex.optimizers.checkpoint.CoproState)
    __pydantic_config__ = ConfigDict(extra="forbid")

    predictor: int
    setting: Setting
    program: tuple[Setting, ...]
    score: float
    depth: int


def as_setting(value: Sequence[str]) -> Setting:
    instruction, prefix = value
    return str(instruction), str(prefix)


def describe(setting: Setting) -> str:
    return f"instruction: {setting[0]} | prefix: {setting[1]}"


def proposal_rollout_id(seed: int, depth: int, predictor: int, index: int) -> int:
    # Distinct for every proposal of a run, stable across restarts, and changed by ``seed``.
    return zlib.crc32(f"copro:{seed}:{depth}:{predictor}:{index}".encode()) & 0x3FFFFFFF


def attempts_text(evaluated: Sequence[Scored], breadth: int) -> str:
    """Up to ``breadth`` of a predictor's best attempts with their scores, worst first (DSPy's listing)."""
    ranked = sorted(evaluated, key=lambda e: e.score, reverse=True)[:breadth]
    lines = []
    for number, entry in enumerate(reversed(ranked), start=1):
        lines += [
            f"Instruction #{number}: {entry.setting[0]}",
            f"Prefix #{number}: {entry.setting[1]}",
            f"Resulting Score #{number}: {entry.score}",
        ]
    return "\n".join(lines)


STAT_KEYS = ("depth", "max", "average", "min", "std")


def summary(depth: int, scores: list[float]) -> dict[str, float]:
    return {
        "depth": depth,
        "max": max(scores),
        "average": sum(scores) / len(scores),
        "min": min(scores),
        "std": statistics.pstdev(scores),
    }


def current_setting(predictor: Predictor) -> Setting:
    signature = predictor.signature
    last = list(signature.output_fields.values())[-1]
    return signature.instructions, last.prefix
