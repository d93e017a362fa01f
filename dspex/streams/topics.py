"""The topics of the pipeline, their names under a prefix, and the shape each must have.

A :class:`TopicRegistry` is pure data: it validates the prefix and partition counts when it is
built, so that a bad value is refused before anything is created on a broker.
:func:`dspex.streams.admin.ensure_topics` then creates what is missing.

    >>> registry = TopicRegistry("dspex.")
    >>> registry.name("tasks")
    'dspex.tasks'
    >>> registry.spec("candidates").config["cleanup.policy"]
    'compact'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from dspex.errors import ConfigurationError

__all__ = [
    "DEFAULT_PARTITIONS",
    "LARGE_MESSAGE_BYTES",
    "MAX_TOPIC_NAME_LENGTH",
    "MIN_TASK_PARTITIONS",
    "ROLES",
    "TopicRegistry",
    "TopicRole",
    "TopicSpec",
]

TopicRole = Literal[
    "jobs",
    "candidates",
    "tasks",
    "predictions",
    "scores",
    "status",
    "workers",
    "dlq",
    "optimizer-state",
    "blobs",
    "submit",
    "lm-requests",
    "lm-responses",
    "lm-batches",
]
ROLES: tuple[TopicRole, ...] = get_args(TopicRole)

MAX_TOPIC_NAME_LENGTH = 249
MIN_TASK_PARTITIONS = 8
# Values of several MB are expected (demos with passages, ReAct traces); producers compress with lz4.
LARGE_MESSAGE_BYTES = 16 * 1024 * 1024

DEFAULT_PARTITIONS: dict[TopicRole, int] = {
    "jobs": 8,  # = scores: the aggregator (faust) co-partitions jobs and scores by job_id
    "candidates": 4,
    "tasks": 16,
    "predictions": 8,
    "scores": 8,
    "status": 4,
    "workers": 1,
    "dlq": 4,
    "optimizer-state": 4,
    "blobs": 8,
    "submit": 4,
    "lm-requests": 4,
    "lm-responses": 4,
    "lm-batches": 1,
}

_LEGAL_NAME = re.compile(r"^[a-zA-Z0-9._-]*$")
_LARGE = {"max.message.bytes": str(LARGE_MESSAGE_BYTES)}
_COMPACT = {"cleanup.policy": "compact"}
_TOPIC_CONFIG: dict[TopicRole, dict[str, str]] = {
    "jobs": _LARGE,
    "candidates": {**_COMPACT, **_LARGE},
    "tasks": _LARGE,
    "predictions": _LARGE,
    "scores": _LARGE,
    # Tombstones (``dspex purge``) are kept 7 days, as long as the jobs topic keeps a job at Kafka's
    # default retention, so that workers reading both still see that the job was purged.
    "status": {**_COMPACT, **_LARGE, "delete.retention.ms": str(7 * 24 * 3600 * 1000)},
    # Heartbeats are only interesting while fresh: compacted per worker, and old segments dropped.
    "workers": {"cleanup.policy": "compact,delete", "retention.ms": "3600000", "segment.ms": "600000"},
    "dlq": _LARGE,
    "optimizer-state": {**_COMPACT, **_LARGE},
    # Large example values in chunks (dspex.streams.blobs), keyed by content hash and chunk index:
    # compaction drops repeated uploads of the same value, retention (7 days) those of old jobs.
    "blobs": {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(7 * 24 * 3600 * 1000),
        **_LARGE,
    },
    # Self-contained submissions from any producer (dspex.schemas.submit): examples travel inline.
    "submit": _LARGE,
    # Provider batches (dspex.processors.provider_batch): parked tasks' LM requests, the provider's
    # answers by request hash, and the batches in flight by batch key (the worker's checkpoint).
    "lm-requests": _LARGE,
    "lm-responses": {**_COMPACT, **_LARGE},
    "lm-batches": {**_COMPACT, **_LARGE},
}


@dataclass(frozen=True)
class TopicSpec:
    """One topic as it must exist on the broker."""

    role: TopicRole
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        """Whether the topic keeps the latest value per key (``cleanup.policy`` includes compact)."""
        return "compact" in self.config.get("cleanup.policy", "")


class TopicRegistry:
    """The pipeline's topics under one prefix (``prefix + role``, e.g. ``dspex.tasks``)."""

    def __init__(
        self,
        prefix: str = "dspex.",
        *,
        partitions: Mapping[str, int] | None = None,
        replication_factor: int = 1,
        config: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Validate everything up front; raises ConfigurationError naming what to change.

        ``config``: topic settings per role over the defaults (retention: :mod:`dspex.streams.retention`).
        """
        _check_prefix(prefix)
        counts = _check_partitions(partitions or {})
        if replication_factor < 1:
            raise ConfigurationError(f"replication factor must be >= 1, got {replication_factor}")
        unknown = sorted(set(config or {}) - set(ROLES))
        if unknown:
            raise ConfigurationError(f"topic settings for unknown topic roles {unknown}; known: {ROLES}")
        self.prefix = prefix
        self.replication_factor = replication_factor
        self._overrides = {role: dict(values) for role, values in (config or {}).items()}
        self._specs = {role: self._build(role, counts[role]) for role in ROLES}

    def _build(self, role: TopicRole, partitions: int) -> TopicSpec:
        config = {**_TOPIC_CONFIG[role], **self._overrides.get(role, {})}
        return TopicSpec(role, self.prefix + role, partitions, self.replication_factor, config)

    def name(self, role: TopicRole) -> str:
        """The full topic name of ``role``."""
        return self.spec(role).name

    def spec(self, role: TopicRole) -> TopicSpec:
        """The spec of ``role``; an unknown role raises ConfigurationError."""
        if role not in self._specs:
            raise ConfigurationError(f"unknown topic role {role!r}; known roles: {', '.join(ROLES)}")
        return self._specs[role]

    def specs(self) -> list[TopicSpec]:
        """Every topic, in the design's order."""
        return [self._specs[role] for role in ROLES]

    def role_of(self, topic: str) -> TopicRole | None:
        """The role of a full topic name, or None when it is not one of ours."""
        return next((spec.role for spec in self._specs.values() if spec.name == topic), None)

    def __repr__(self) -> str:
        return f"TopicRegistry(prefix={self.prefix!r}, replication_factor={self.replication_factor})"


def _check_prefix(prefix: str) -> None:
    if not _LEGAL_NAME.match(prefix):
        raise ConfigurationError(
            f"topic prefix {prefix!r} may only contain ASCII letters, digits, '.', '_' and '-'"
        )
    longest = max(len(role) for role in ROLES)
    if len(prefix) + longest > MAX_TOPIC_NAME_LENGTH:
        limit = MAX_TOPIC_NAME_LENGTH - longest
        raise ConfigurationError(f"topic prefix is {len(prefix)} characters; at most {limit} fit")


def _check_partitions(overrides: Mapping[str, int]) -> dict[TopicRole, int]:
    unknown = sorted(set(overrides) - set(ROLES))
    if unknown:
        raise ConfigurationError(f"partition counts for unknown topic roles {unknown}; known: {ROLES}")
    counts: dict[TopicRole, int] = {**DEFAULT_PARTITIONS, **overrides}  # type: ignore[dict-item]
    for role, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigurationError(f"topic {role!r} needs a partition count >= 1, got {count!r}")
    if counts["tasks"] < MIN_TASK_PARTITIONS:
        raise ConfigurationError(
            f"the tasks topic needs at least {MIN_TASK_PARTITIONS} partitions so that predictors "
            f"can scale out; got {counts['tasks']}"
        )
    return counts
