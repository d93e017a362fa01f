"""What one consumer-group member is told: :class:`ConsumerOptions`, and its librdkafka configuration.

A :class:`~dspex.streams.consumer.ConsumerRuntime` takes its plain options (group, topics, bounds,
timing) in one frozen object, and its collaborators (handler, producer, decoder, hooks) as keyword
arguments. Processors build the options from theirs (a worker's ``--concurrency`` becomes
``max_in_flight``); the environment is never read here.

    >>> options = ConsumerOptions(group_id="dspex.predict", topics=["dspex.tasks"], dlq_topic="dspex.dlq")
    >>> options.topics, options.max_in_flight
    (('dspex.tasks',), 64)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dspex.errors import ConfigurationError
from dspex.streams.config import KafkaSettings, client_config, consumer_defaults, settings_error

__all__ = [
    "REJOIN_AFTER_MIN_S",
    "REJOIN_AFTER_SESSIONS",
    "STATISTICS_INTERVAL_MS",
    "ConsumerOptions",
    "consumer_config",
    "default_rejoin_after",
]

STATISTICS_INTERVAL_MS = 5_000  # librdkafka's stats_cb period (consumer lag, rx/tx counts)
# A member out of its group this many session timeouts (at least REJOIN_AFTER_MIN_S) is stuck: a
# rebalance of members that poll every 100 ms takes a few seconds, a broker restart a few more.
REJOIN_AFTER_SESSIONS = 5
REJOIN_AFTER_MIN_S = 60.0
_DEFAULT_SESSION_TIMEOUT_MS = 45_000
_DEFAULT_MAX_POLL_INTERVAL_MS = 300_000


class ConsumerOptions(BaseModel):
    """How one consumer-group member consumes (see :mod:`dspex.streams.consumer` for the behaviour).

    ``high_watermark`` defaults to ``max_in_flight`` and ``low_watermark`` to half the high one;
    ``max_backlog_bytes`` pauses the partitions while the read-ahead holds that many bytes (None: no
    byte bound). ``config`` adds librdkafka consumer properties; ``fast_groups`` selects the short
    group timing of tests and the dev broker. ``rejoin_after`` (seconds out of the group before the
    member is replaced) defaults to REJOIN_AFTER_SESSIONS session timeouts. ``worker_id`` names the
    member in dead letters (default HOST-PID-XXXXXX).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    group_id: str = Field(min_length=1)
    topics: tuple[str, ...] = Field(min_length=1)
    dlq_topic: str = Field(min_length=1)
    worker_id: str | None = None
    max_in_flight: int = Field(64, ge=1)
    high_watermark: int | None = Field(None, ge=1)
    low_watermark: int | None = Field(None, ge=0)
    max_backlog_bytes: int | None = Field(None, ge=1)
    drain_timeout: float = Field(5.0, gt=0)
    commit_interval: float = Field(0.2, gt=0)
    poll_timeout: float = Field(0.1, ge=0)
    fast_groups: bool = False
    rejoin_after: float | None = Field(None, gt=0)
    config: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise settings_error(exc, lambda field: f"ConsumerOptions.{field}") from None

    @model_validator(mode="after")
    def _check_strategy(self) -> ConsumerOptions:
        strategy = self.config.get("partition.assignment.strategy", "cooperative-sticky")
        if strategy != "cooperative-sticky":
            raise ConfigurationError(
                "the consumer runtime needs partition.assignment.strategy=cooperative-sticky "
                f"(it assigns and pauses partitions incrementally); got {strategy!r}"
            )
        return self

    @property
    def watermarks(self) -> tuple[int, int]:
        """The (high, low) outstanding-message watermarks, defaults applied."""
        high = self.max_in_flight if self.high_watermark is None else self.high_watermark
        return high, high // 2 if self.low_watermark is None else self.low_watermark


def consumer_config(
    settings: KafkaSettings,
    options: ConsumerOptions,
    log: logging.Logger,
    on_commit: Callable[..., None],
) -> dict[str, Any]:
    """The confluent-kafka Consumer configuration of a runtime (``stats_cb`` is added per consumer).

    Offsets are committed by the runtime only (never automatically); a ``drain_timeout`` that does
    not fit under the rebalance timeout is a :class:`ConfigurationError`.
    """
    config = client_config(
        settings,
        log,
        **{
            "group.id": options.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            # A resumed partition waits for the broker's in-flight long-poll fetch to return
            # (one fetch per broker at a time); Kafka's 500 ms default makes every resume at
            # the end of the log cost half a second.
            "fetch.wait.max.ms": 100,
            "on_commit": on_commit,
            "statistics.interval.ms": STATISTICS_INTERVAL_MS,
            **consumer_defaults(options.fast_groups),
            **options.config,
        },
    )
    max_poll_ms = int(config.get("max.poll.interval.ms", _DEFAULT_MAX_POLL_INTERVAL_MS))
    if not 0 < options.drain_timeout * 1000 < max_poll_ms:
        raise ConfigurationError(
            f"drain_timeout ({options.drain_timeout} s) must be positive and below the rebalance "
            f"timeout (max.poll.interval.ms = {max_poll_ms})"
        )
    return config


def default_rejoin_after(config: dict[str, Any]) -> float:
    """Seconds out of the group after which a member is replaced: some session timeouts, or a minute."""
    session_ms = float(config.get("session.timeout.ms", _DEFAULT_SESSION_TIMEOUT_MS))
    return max(REJOIN_AFTER_MIN_S, REJOIN_AFTER_SESSIONS * session_ms / 1000)
