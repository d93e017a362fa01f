"""Fixtures of the streams tests: settings for the session's broker and a fresh topic set."""

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
    """Every pipeline topic under this test's own prefix (tasks with 8 partitions), created."""
    topics = TopicRegistry(topic_prefix, partitions={"tasks": 8})
    ensure_topics(settings, topics)
    return topics
