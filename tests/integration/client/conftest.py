"""Fixtures of the client tests: settings for the session's broker, this test's topics, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dspex.client import Client
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry


@pytest.fixture
def settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, client_id="dspex-client-tests")


@pytest.fixture
def registry(settings: KafkaSettings, topic_prefix: str) -> TopicRegistry:
    """Every pipeline topic under this test's own prefix, created."""
    topics = TopicRegistry(topic_prefix)
    ensure_topics(settings, topics)
    return topics


@pytest.fixture
async def client(settings: KafkaSettings, registry: TopicRegistry) -> AsyncIterator[Client]:
    async with Client(kafka=settings, prefix=registry.prefix) as made:
        yield made
