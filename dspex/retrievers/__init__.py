"""Retrievers, at DSPy's paths: ``Embeddings`` (and ``EmbeddingsWithScores``) search a corpus by
embedding similarity; ``ColBERTv2`` asks a ColBERTv2 search server; ``Retrieve`` asks the
configured retrieval model (``settings.rm``)."""

from __future__ import annotations

from dspex.retrievers.colbertv2 import ColBERTv2
from dspex.retrievers.embeddings import Embeddings, EmbeddingsWithScores
from dspex.retrievers.retrieve import Retrieve

__all__ = ["ColBERTv2", "Embeddings", "EmbeddingsWithScores", "Retrieve"]
