"""Tools of the agent job the Prometheus pipeline test runs, so that the dashboard's tool panels
have data: ``add`` answers, ``unreliable`` always fails (its service is "down"), which gives the
error ratio and opens its circuit breaker. Importable by path in the workers (their PYTHONPATH has
this folder, and ``--allow-module obs_agent_tools``)."""

from __future__ import annotations

__all__ = ["add", "unreliable"]


def add(a: int, b: int) -> int:
    """Add two integers and return the sum."""
    return a + b


def unreliable(query: str) -> str:
    """Look a query up in a service that is down."""
    raise ConnectionRefusedError(f"the lookup service refused {query!r}")
