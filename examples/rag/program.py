"""A retrieval-augmented program: a custom Module that retrieves passages, then answers with them.

The retriever is plain Python (not a Module), so it is not part of the saved program: a worker
rebuilds ``RAG`` by its import path, ``examples.rag.program:RAG``, which loads the corpus again,
and overlays the saved predictor state (instructions, demos) onto it. Workers therefore need this
package importable (run them from the repository root with ``PYTHONPATH=.``) and allowed
(``--allow-module examples.rag``).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import dspex

__all__ = ["RAG", "KeywordRetriever", "load_corpus"]

CORPUS = Path(__file__).parent / "corpus.jsonl"
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    {"a", "an", "the", "of", "in", "on", "at", "to", "is", "was", "and", "its", "does", "do",
     "what", "which", "who", "when", "where", "how", "many"}
)  # fmt: skip


def load_corpus(path: Path = CORPUS) -> list[str]:
    """The passages, one JSON object with a ``text`` field per line."""
    return [json.loads(line)["text"] for line in path.read_text("utf-8").splitlines() if line.strip()]


def _terms(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS]


class KeywordRetriever:
    """BM25-flavoured keyword scoring over a small in-memory corpus: rare shared words count most."""

    def __init__(self, passages: list[str], k: int = 3) -> None:
        self.passages, self.k = passages, k
        self._terms = [Counter(_terms(p)) for p in passages]
        frequency = Counter(term for terms in self._terms for term in terms)
        self._idf = {term: math.log(1 + len(passages) / count) for term, count in frequency.items()}

    def search(self, query: str) -> list[str]:
        """The ``k`` passages sharing the most (rarest) words with ``query``, best first."""
        wanted = set(_terms(query))
        scores = [sum(self._idf[t] for t in wanted if t in terms) for terms in self._terms]
        ranked = sorted(range(len(self.passages)), key=lambda i: (-scores[i], i))
        return [self.passages[i] for i in ranked[: self.k] if scores[i] > 0]


class RAG(dspex.Module):
    """Retrieve ``k`` passages for the question, then answer from them with a chain of thought."""

    def __init__(self, k: int = 3) -> None:
        self.retriever = KeywordRetriever(load_corpus(), k=k)
        self.respond = dspex.ChainOfThought("context: list[str], question -> answer")

    async def aforward(self, question: str) -> dspex.Prediction:
        context = self.retriever.search(question)
        return await self.respond.acall(context=context, question=question)
