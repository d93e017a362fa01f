"""Setting configuration entries on existing topics (``dspex topics create --retention``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from dspex.errors import KafkaError
from dspex.streams.config import KafkaSettings, client_config

__all__ = ["set_topic_configs"]

logger = logging.getLogger(__name__)
_TIMEOUT_S = 30.0


def set_topic_configs(
    settings: KafkaSettings, wanted: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """Set ``topic -> {key: value}`` on existing topics (only those keys: incremental); returns
    what was set. KafkaError naming the topic when the broker refuses."""
    if not wanted:
        return {}
    admin = AdminClient(client_config(settings, logger))
    resources = [_resource(topic, entries) for topic, entries in wanted.items() if entries]
    try:
        futures = admin.incremental_alter_configs(resources, request_timeout=_TIMEOUT_S)
    except KafkaException as exc:
        raise KafkaError(f"could not change topic settings: {exc}") from exc
    for resource, future in futures.items():
        try:
            future.result(timeout=_TIMEOUT_S + 1)
        except KafkaException as exc:
            name = resource.name
            raise KafkaError(f"could not change the settings of {name}: {exc}", topic=name) from exc
    return {topic: dict(entries) for topic, entries in wanted.items() if entries}


def _resource(topic: str, entries: Mapping[str, str]) -> ConfigResource:
    changes = [
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET) for key, value in entries.items()
    ]
    return ConfigResource(ResourceType.TOPIC, topic, incremental_configs=changes)


def read_topic_configs(
    settings: KafkaSettings, topics: list[str], keys: set[str]
) -> dict[str, dict[str, str]]:
    """``topic -> {key: value}`` of the ``keys`` each topic has in effect (its own or the broker's
    default). A topic that cannot be described is left out."""
    admin = AdminClient(client_config(settings, logger))
    resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in topics]
    try:
        futures = admin.describe_configs(resources, request_timeout=_TIMEOUT_S)
    except KafkaException as exc:
        raise KafkaError(f"could not read topic settings: {exc}") from exc
    found: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=_TIMEOUT_S + 1)
        except KafkaException:
            continue
        found[resource.name] = {
            k: str(e.value) for k, e in entries.items() if k in keys and e.value is not None
        }
    return found
