"""Observability: filled in by the pipeline and observability issues."""
