"""Fixtures the worker tests share: Kafka settings for the session broker, and this test's topics."""

from __future__ import annotations

import pytest

from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry


@pytest.fixture
def settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, client_id="dspex-tests")


@pytest.fixture
def registry(settings: KafkaSettings, topic_prefix: str) -> TopicRegistry:
    """The topics under this test's own prefix, created (8 task partitions)."""
    topics = TopicRegistry(topic_prefix, partitions={"tasks": 8})
    ensure_topics(settings, topics)
    return topics
