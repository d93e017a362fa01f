"""The workers' Prometheus metrics (process-wide, in prometheus_client's default registry).

Labels are bounded: the worker ``kind``, a topic name, an outcome from a fixed set. No job, task or
example id is ever a label. Several workers in one process (tests) share these series and are told
apart by ``kind``.

    >>> MESSAGES_CONSUMED.labels(kind="predict", topic="dspex.tasks", outcome="ok").inc()
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONSUME_OUTCOMES",
    "HANDLER_DURATION",
    "LM_CALLS",
    "MESSAGES_CONSUMED",
    "MESSAGES_PRODUCED",
    "TASKS_IN_FLIGHT",
    "ConsumeOutcome",
]

ConsumeOutcome = Literal["ok", "skipped", "dead_lettered"]
CONSUME_OUTCOMES: Final = ("ok", "skipped", "dead_lettered")

MESSAGES_CONSUMED: Final = Counter(
    "dspex_messages_consumed_total",
    "Messages a worker finished with, by input topic and outcome (ok, skipped, dead_lettered).",
    ["kind", "topic", "outcome"],
)
MESSAGES_PRODUCED: Final = Counter(
    "dspex_messages_produced_total",
    "Records a worker produced and the broker acknowledged, by topic.",
    ["kind", "topic"],
)
TASKS_IN_FLIGHT: Final = Gauge(
    "dspex_tasks_in_flight",
    "Messages received and not yet finished (running handlers plus the local backlog).",
    ["kind"],
)
HANDLER_DURATION: Final = Histogram(
    "dspex_handler_duration_seconds",
    "Time from a message's handler starting to its output being acknowledged.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
LM_CALLS: Final = Counter(
    "dspex_lm_requests_total",
    "LM requests made by programs a worker ran, by outcome (ok, cache_hit, or the error kind).",
    ["kind", "outcome"],
)
