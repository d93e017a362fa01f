"""The simulated LM's embeddings: hashed words and character trigrams, L2-normalized.

Texts that share words and spellings share dimensions, so ``"What is 347 + 28?"`` lies nearer to
``"What is 347 + 29?"`` than to ``"Name the capital of France."``; that is all KNN-style demo selection
needs. CRC-32 (not Python's salted ``hash``) keeps vectors equal across processes.
"""

from __future__ import annotations

import math
import re
import zlib

__all__ = ["DEFAULT_DIMENSIONS", "embed"]

DEFAULT_DIMENSIONS = 64
_WORD = re.compile(r"\w+|[^\w\s]")
_WORD_WEIGHT = 2.0


def _add(vector: list[float], feature: str, weight: float) -> None:
    code = zlib.crc32(feature.encode("utf-8"))
    sign = 1.0 if (code >> 16) & 1 else -1.0
    vector[code % len(vector)] += sign * weight


def embed(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A deterministic unit vector for ``text`` (all zeros for an empty text)."""
    vector = [0.0] * dimensions
    lowered = text.lower()
    for word in _WORD.findall(lowered):
        _add(vector, "w:" + word, _WORD_WEIGHT)
    padded = f" {lowered} "
    for i in range(len(padded) - 2):
        _add(vector, padded[i : i + 3], 1.0)
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector
