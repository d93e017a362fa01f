"""Kafka's default key partitioner, in Python: which partition a keyed record lands on.

Java clients, aiokafka (and so faust) and confluent-kafka with ``partitioner=murmur2_random`` all
place a record with key ``k`` on ``positive(murmur2(k)) % partitions``, where ``murmur2`` is
Kafka's 32-bit MurmurHash2 variant (seed ``0x9747b28c``) and ``positive`` clears the sign bit.
Knowing it lets a reader fetch one job's records from the one partition that holds them instead
of scanning the whole topic.

    >>> partition_for(b"job-1", 8) == partition_for("job-1", 8)
    True
    >>> murmur2(b"21")
    -973932308
"""

from __future__ import annotations

import struct

from dspex.errors import ConfigurationError

__all__ = ["murmur2", "partition_for", "to_positive"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: a signed 32-bit hash of ``data``."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for (k,) in struct.iter_unpack("<I", data[:whole]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    h = _tail(h, data[whole:])
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def _tail(h: int, rest: bytes) -> int:
    # The 1-3 bytes past the last whole word, mixed in as Java's switch fall-through does.
    if len(rest) >= 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h ^= rest[0]
        h = (h * _M) & _MASK
    return h


def to_positive(number: int) -> int:
    """Kafka's ``Utils.toPositive``: the hash with its sign bit cleared (not its absolute value)."""
    return number & 0x7FFFFFFF


def partition_for(key: bytes | str, partitions: int) -> int:
    """The partition a record with ``key`` goes to on a topic of ``partitions`` partitions."""
    if partitions < 1:
        raise ConfigurationError(f"a topic has at least one partition, got {partitions}")
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    return to_positive(murmur2(raw)) % partitions
