"""Arithmetic QA: a saved ChainOfThought program on 200 questions.

python -m examples.arithmetic.run                       # locally, on the simulated LM
python -m examples.arithmetic.run --kafka 127.0.0.1:9092   # through the cluster's workers
"""

from __future__ import annotations

from pathlib import Path

import dspex
from examples._run import main, read_jsonl

HERE = Path(__file__).parent

if __name__ == "__main__":
    main(
        dspex.load(HERE / "program.json"),
        read_jsonl(HERE / "dev.jsonl", ["question"]),
        "numeric_equal:answer",
        description=__doc__ or "",
    )
