"""Fixtures of the CLI tests against the session's broker: settings and this test's own topics."""

from __future__ import annotations

import pytest

from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry


@pytest.fixture
def settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, client_id="dspex-cli-tests")


@pytest.fixture
def registry(settings: KafkaSettings, topic_prefix: str) -> TopicRegistry:
    """Every pipeline topic under this test's own prefix, created."""
    topics = TopicRegistry(topic_prefix)
    ensure_topics(settings, topics)
    return topics
