"""Kafka plumbing: settings, topic registry, admin, serde, producer, consumer runtime, reader.

Importing this package imports confluent-kafka; the programming model never does.
"""

from __future__ import annotations

from dspex.streams.admin import (
    EnsureResult,
    GroupLag,
    KafkaAdmin,
    PartitionLag,
    ensure_topics,
    group_lag,
    probe,
)
from dspex.streams.config import KafkaSettings, consumer_defaults
from dspex.streams.consumer import ConsumerOptions, ConsumerRuntime, RuntimeStats
from dspex.streams.dlq import dead_letter
from dspex.streams.flow import OffsetTracker, Watermarks
from dspex.streams.producer import AsyncProducer, Delivery, ProducerStats
from dspex.streams.reader import CompactedReader
from dspex.streams.serde import Record, decode_message, model_decoder, to_record
from dspex.streams.topics import ROLES, TopicRegistry, TopicRole, TopicSpec

__all__ = [
    "ROLES",
    "AsyncProducer",
    "CompactedReader",
    "ConsumerOptions",
    "ConsumerRuntime",
    "Delivery",
    "EnsureResult",
    "GroupLag",
    "KafkaAdmin",
    "KafkaSettings",
    "OffsetTracker",
    "PartitionLag",
    "ProducerStats",
    "Record",
    "RuntimeStats",
    "TopicRegistry",
    "TopicRole",
    "TopicSpec",
    "Watermarks",
    "consumer_defaults",
    "dead_letter",
    "decode_message",
    "ensure_topics",
    "group_lag",
    "model_decoder",
    "probe",
    "to_record",
]
