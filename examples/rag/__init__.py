"""Retrieval-augmented QA with a custom Module and a tiny in-memory retriever."""
