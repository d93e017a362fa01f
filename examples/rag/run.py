"""Retrieval-augmented QA: the custom ``RAG`` module on 10 questions about a small corpus.

    python -m examples.rag.run                          # locally, on the simulated LM
    python -m examples.rag.run --kafka 127.0.0.1:9092   # through the cluster's workers

The simulated LM knows no facts (it answers with placeholder text), so its score here is ~0: the
example shows the mechanics. Point ``--api-base`` at a real OpenAI-compatible endpoint for scores.
"""

from __future__ import annotations

from pathlib import Path

from examples._run import main, read_jsonl
from examples.rag.program import RAG

HERE = Path(__file__).parent

if __name__ == "__main__":
    main(RAG(), read_jsonl(HERE / "dev.jsonl", ["question"]), "contains:answer", description=__doc__ or "")
