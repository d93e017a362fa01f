"""Processors: filled in by the pipeline and observability issues."""
