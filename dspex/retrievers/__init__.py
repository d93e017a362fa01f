"""Retrievers, at DSPy's paths: ``Embeddings`` (and ``EmbeddingsWithScores``) search a corpus by
embedding similarity; ``Retrieve`` asks the configured retrieval model (``settings.rm``)."""

from __future__ import annotations

from dspex.retrievers.embeddings import Embeddings, EmbeddingsWithScores
from dspex.retrievers.retrieve import Retrieve

__all__ = ["Embeddings", "EmbeddingsWithScores", "Retrieve"]
