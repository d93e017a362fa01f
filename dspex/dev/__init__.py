"""Development tools: the project's own Kafka broker, started from Maven Central's jars.

Example::

    from dspex.dev import DevBroker

    broker = DevBroker(port=9092)
    broker.start()
"""

from __future__ import annotations

from dspex.dev.broker import (
    BrokerState,
    BrokerStatus,
    DevBroker,
    default_cache_dir,
    default_data_dir,
    kafka_version,
)
from dspex.dev.probe import probe_metadata, quiet_client_config

__all__ = [
    "BrokerState",
    "BrokerStatus",
    "DevBroker",
    "default_cache_dir",
    "default_data_dir",
    "kafka_version",
    "probe_metadata",
    "quiet_client_config",
]
