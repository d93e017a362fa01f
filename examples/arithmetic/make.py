"""Rebuild this example's files: the program JSON and the JSONL dataset (deterministic).

python -m examples.arithmetic.make
"""

from __future__ import annotations

import json
from pathlib import Path

import dspex
from dspex.testing import arithmetic_rows

HERE = Path(__file__).parent


def program() -> dspex.Module:
    """A zero-shot chain of thought; its instructions carry one of the phrases the task rewards."""
    qa = dspex.ChainOfThought("question -> answer")
    qa.predict.signature = qa.predict.signature.with_instructions(
        "Answer the arithmetic question. Work it out step by step and give only the final number."
    )
    return qa


def main() -> None:
    program().save(HERE / "program.json")
    rows = arithmetic_rows(200, seed=2024)
    (HERE / "dev.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    print(f"wrote {HERE / 'program.json'} and {len(rows)} examples to {HERE / 'dev.jsonl'}")


if __name__ == "__main__":
    main()
