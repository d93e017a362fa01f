"""Kafka's murmur2 partitioner in Python: Kafka's own test vectors and its placement rule.

Where confluent-kafka (partitioner=murmur2_random) really puts keys is checked against a broker in
tests/integration/client/test_partitioner_placement.py.
"""

from __future__ import annotations

import pytest

from dspex.errors import ConfigurationError
from dspex.streams.partitioner import murmur2, partition_for, to_positive

# From Kafka's UtilsTest.testMurmur2 (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS.items(), ids=lambda v: repr(v)[:20])
def test_murmur2_matches_kafkas_test_vectors(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_every_tail_length_and_the_empty_key_hash_to_32_bit_signed_values() -> None:
    values = [murmur2(b"x" * n) for n in range(0, 9)]
    assert all(-(2**31) <= value < 2**31 for value in values)
    assert len(set(values)) == len(values)


def test_to_positive_clears_the_sign_bit_instead_of_taking_the_absolute_value() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-973932308) == -973932308 & 0x7FFFFFFF
    assert to_positive(5) == 5


def test_partition_is_positive_hash_modulo_count_for_str_and_bytes() -> None:
    assert partition_for(b"foobar", 8) == (-790332482 & 0x7FFFFFFF) % 8
    assert partition_for("foobar", 8) == partition_for(b"foobar", 8)
    assert {partition_for(f"job-{i}", 8) for i in range(200)} == set(range(8))


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least one partition"):
        partition_for("k", 0)
