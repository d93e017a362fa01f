"""Whether a compacted topic's latest record for a key is a tombstone: a job that was purged.

Read with :func:`dspex.cli._ids.values_keyed`: the one partition the key hashes to, from its first
offset to its end, without a consumer group.
"""

from __future__ import annotations

from dspex.cli._ids import values_keyed
from dspex.streams.config import KafkaSettings

__all__ = ["latest_is_tombstone"]


def latest_is_tombstone(settings: KafkaSettings, topic: str, key: str, *, timeout: float = 10.0) -> bool:
    """True when the last record keyed ``key`` on ``topic`` has no value (False: a value, or no
    record at all). KafkaError when the broker does not answer."""
    latest = False
    with values_keyed(settings, topic, key, timeout=timeout) as values:
        for value in values:
            latest = value is None
    return latest
