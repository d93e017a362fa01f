"""Our murmur2 partitioner puts keys where confluent-kafka (partitioner=murmur2_random) really
puts them on a broker — the rule the client relies on to read one job from one partition."""

from __future__ import annotations

import uuid

import pytest
from client_kafka import read_topic
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dspex.streams.config import KafkaSettings
from dspex.streams.partitioner import partition_for
from dspex.streams.producer import PRODUCER_DEFAULTS

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]


@pytest.mark.parametrize("partitions", [1, 7, 16])
def test_keys_land_where_the_python_partitioner_says(
    settings: KafkaSettings, topic_prefix: str, partitions: int
) -> None:
    topic = f"{topic_prefix}placement-{partitions}"
    admin = AdminClient(settings.confluent())
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    # job-like ids, short and long keys, every tail length, and non-ASCII
    keys = [uuid.uuid4().hex for _ in range(150)] + [f"k{i}" * (i % 9) for i in range(1, 40)] + ["jöb-✓"]
    producer = Producer({**settings.confluent(), "partitioner": PRODUCER_DEFAULTS["partitioner"]})
    for key in keys:
        producer.produce(topic, b"v", key=key.encode("utf-8"))
    assert producer.flush(30) == 0
    placed = {m.key().decode("utf-8"): m.partition() for m in read_topic(settings, topic)}
    assert placed == {key: partition_for(key, partitions) for key in keys}
    if partitions > 1:
        assert len(set(placed.values())) > 1
