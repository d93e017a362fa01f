"""Topic creation, the broker probe and group lag against a real broker."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from dspex.errors import BrokerUnavailableError, TopicError
from dspex.streams.admin import KafkaAdmin, ensure_topics, group_lag, probe
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import ROLES, TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def describe(settings: KafkaSettings, topic: str, key: str) -> str:
    admin = AdminClient(settings.confluent())
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    return str(next(iter(futures.values())).result(10)[key].value)


def create_topic(settings: KafkaSettings, name: str, partitions: int) -> None:
    admin = AdminClient(settings.confluent())  # kept alive until the future resolves
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)
    # Creation returns before every broker's metadata shows the topic; wait until it does, so the
    # test exercises "exists already" rather than a creation race.
    deadline = time.monotonic() + 10
    while name not in KafkaAdmin(settings).partition_counts([name]) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_ensure_topics_creates_the_design_shapes_once(settings: KafkaSettings, topic_prefix: str) -> None:
    registry = TopicRegistry(topic_prefix, partitions={"tasks": 12})
    first = ensure_topics(settings, registry)
    assert first.created == [registry.name(role) for role in ROLES] and first.existed == []
    again = ensure_topics(settings, registry)
    assert again.created == [] and sorted(again.existed) == sorted(first.created)

    counts = KafkaAdmin(settings).partition_counts(first.created)
    assert counts[registry.name("tasks")] == 12
    assert counts[registry.name("predictions")] == registry.spec("predictions").partitions
    assert describe(settings, registry.name("candidates"), "cleanup.policy") == "compact"
    assert describe(settings, registry.name("tasks"), "max.message.bytes") == str(16 * 1024 * 1024)


def test_existing_topic_with_too_few_partitions_is_an_error(
    settings: KafkaSettings, topic_prefix: str
) -> None:
    registry = TopicRegistry(topic_prefix)
    create_topic(settings, registry.name("tasks"), 8)
    with pytest.raises(TopicError, match=r"exists with 8 partitions but needs at least 16") as caught:
        ensure_topics(settings, registry)
    assert caught.value.topic == registry.name("tasks")
    # Checked before anything was created.
    assert KafkaAdmin(settings).partition_counts([registry.name("jobs")]) == {}


def test_existing_uncompacted_candidates_topic_is_an_error(
    settings: KafkaSettings, topic_prefix: str
) -> None:
    registry = TopicRegistry(topic_prefix)
    name = registry.name("candidates")
    create_topic(settings, name, 4)
    with pytest.raises(TopicError, match="not compacted"):
        ensure_topics(settings, registry)


def test_probe_of_a_dead_address_fails_fast_and_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=r"127\.0\.0\.1:9 .*dspex dev broker start"):
        probe(KafkaSettings(bootstrap_servers="127.0.0.1:9"), timeout=3)
    assert time.monotonic() - started < 10
    out, err = capfd.readouterr()
    assert "rdkafka" not in err and "rdkafka" not in out, "librdkafka logged to the terminal"


def test_probe_of_the_broker(settings: KafkaSettings) -> None:
    assert probe(settings, timeout=10) >= 1


def test_group_lag_from_committed_and_end_offsets(
    settings: KafkaSettings, registry: TopicRegistry, unique_group: Callable[[str], str]
) -> None:
    topic, group = registry.name("scores"), unique_group("lag")
    producer = Producer({**settings.confluent(), "partitioner": "murmur2_random"})
    for i in range(30):
        producer.produce(topic, b"x", key=b"k", partition=i % 2)
    assert producer.flush(10) == 0

    before = group_lag(settings, group, [topic])
    assert before.total == 30  # nothing committed: everything is lag
    consumer = Consumer({**settings.confluent(), "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
    consumer.close()
    after = group_lag(settings, group, [topic])
    by_partition = {item.partition: item for item in after.partitions}
    assert by_partition[0].committed == 10 and by_partition[0].end == 15 and by_partition[0].lag == 5
    assert by_partition[1].committed is None and by_partition[1].lag == 15
    assert after.total == 20 and after.by_topic() == {topic: 20}


def test_group_lag_of_a_missing_topic_is_a_topic_error(settings: KafkaSettings, topic_prefix: str) -> None:
    with pytest.raises(TopicError, match="does not exist"):
        group_lag(settings, "nobody", [topic_prefix + "missing"])
