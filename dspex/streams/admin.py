"""Talking to the cluster itself: probing a broker, creating topics, reading consumer-group lag.

These calls block (librdkafka's admin API is future-based, not asyncio); async callers run them
with ``asyncio.to_thread``. Every call is bounded by a timeout and raises from ``dspex.errors``.

    >>> admin = KafkaAdmin(KafkaSettings(bootstrap_servers="127.0.0.1:9092"))  # doctest: +SKIP
    >>> admin.probe(timeout=10)  # raises BrokerUnavailableError if nobody answers  # doctest: +SKIP
    >>> admin.ensure_topics(TopicRegistry("dspex."))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as RawKafkaError
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec, ResourceType

from dspex.errors import BrokerUnavailableError, KafkaError, TopicError
from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.topics import TopicRegistry, TopicSpec

__all__ = [
    "EnsureResult",
    "GroupLag",
    "KafkaAdmin",
    "PartitionLag",
    "ensure_topics",
    "group_lag",
    "probe",
    "retry_while_leaders_settle",
]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("dspex.streams.librdkafka.admin")

T = TypeVar("T")

# Answers a partition gives while its leadership settles (just created, or a broker restarted).
_LEADERSHIP_CODES = {
    RawKafkaError.NOT_LEADER_FOR_PARTITION,
    RawKafkaError.LEADER_NOT_AVAILABLE,
    RawKafkaError.UNKNOWN_TOPIC_OR_PART,
    # a group's coordinator moments after the broker started or the offsets topic moved
    RawKafkaError.NOT_COORDINATOR,
    RawKafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    RawKafkaError.COORDINATOR_NOT_AVAILABLE,
}


@dataclass(frozen=True)
class EnsureResult:
    """What :meth:`KafkaAdmin.ensure_topics` found: topics it created and topics that existed."""

    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PartitionLag:
    """Committed versus end offset of one partition for one group.

    ``committed`` is None when the group never committed there; lag then counts from the
    partition's first offset (what a new member with ``auto.offset.reset=earliest`` would read).
    """

    topic: str
    partition: int
    committed: int | None
    start: int
    end: int

    @property
    def lag(self) -> int:
        """Messages at or past the committed offset (never negative)."""
        position = self.start if self.committed is None else max(self.committed, self.start)
        return max(self.end - position, 0)


@dataclass(frozen=True)
class GroupLag:
    """Lag of one consumer group over some topics, per partition."""

    group: str
    partitions: list[PartitionLag]

    @property
    def total(self) -> int:
        """Sum of the lag over every partition."""
        return sum(item.lag for item in self.partitions)

    def by_topic(self) -> dict[str, int]:
        """Lag summed per topic."""
        totals: dict[str, int] = {}
        for item in self.partitions:
            totals[item.topic] = totals.get(item.topic, 0) + item.lag
        return totals


class KafkaAdmin:
    """One admin connection to the cluster; reuse it for repeated calls (status, metrics)."""

    def __init__(self, settings: KafkaSettings, *, timeout: float = 10.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._client = AdminClient(client_config(settings, _librdkafka_logger))
        self._offset_readers: dict[str, Consumer] = {}

    def close(self) -> None:
        """Close the consumers that read committed offsets (the admin client needs no closing)."""
        readers, self._offset_readers = self._offset_readers, {}
        for reader in readers.values():
            reader.close()

    def probe(self, timeout: float | None = None) -> int:
        """Ask for cluster metadata; returns the number of brokers, else BrokerUnavailableError."""
        try:
            metadata = self._client.list_topics(timeout=timeout or self.timeout)
        except KafkaException as exc:
            raise BrokerUnavailableError(self.settings.bootstrap_servers, detail=_describe(exc)) from exc
        return len(metadata.brokers)

    def partition_counts(self, topics: Iterable[str] | None = None) -> dict[str, int]:
        """Partition count of each existing topic (of ``topics`` if given)."""
        metadata = self._metadata()
        wanted = set(topics) if topics is not None else None
        return {
            name: len(topic.partitions)
            for name, topic in metadata.topics.items()
            if topic.error is None and (wanted is None or name in wanted)
        }

    def ensure_topics(self, registry: TopicRegistry) -> EnsureResult:
        """Create every topic of ``registry`` that is missing; check the ones that exist.

        Idempotent. An existing topic with fewer partitions than required, or that should be
        compacted but is not, raises TopicError saying so; nothing is changed on it.
        """
        specs = registry.specs()
        existing = self.partition_counts(spec.name for spec in specs)
        for spec in specs:
            if spec.name in existing:
                self._check_existing(spec, existing[spec.name])
        missing = [spec for spec in specs if spec.name not in existing]
        created, raced = self._create(missing)
        self._wait_visible(created + raced)
        # A topic someone else created between our metadata read and our request gets the same
        # checks as one that existed from the start.
        raced_counts = self.partition_counts(raced) if raced else {}
        for spec in missing:
            if spec.name in raced_counts:
                self._check_existing(spec, raced_counts[spec.name])
        existed = [spec.name for spec in specs if spec.name in existing] + raced
        return EnsureResult(created=created, existed=existed)

    def group_lag(self, group: str, topics: Iterable[str]) -> GroupLag:
        """Committed versus end offsets of ``group`` on ``topics``, through the admin API only.

        Works while no member of the group is alive, which is when lag matters most.
        """
        partitions = self._partitions(topics)
        if not partitions:
            return GroupLag(group, [])
        committed = self.committed(group, partitions)
        # confluent-kafka leaves OffsetSpec's constructors unannotated
        starts = self._list_offsets(partitions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        ends = self._list_offsets(partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        rows = [
            PartitionLag(t, p, committed.get((t, p)), starts[(t, p)], ends[(t, p)]) for t, p in partitions
        ]
        return GroupLag(group, rows)

    def committed(self, group: str, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The committed offset of ``group`` per partition; partitions never committed are absent.

        Read by a consumer of the group that never subscribes (so it never joins the group or
        disturbs its members), not by ``AdminClient.list_consumer_group_offsets``: librdkafka's
        admin client dereferences a consumer-group handle it does not have when the offset answer
        says "find the coordinator again" (librdkafka issue 5040), which killed the aggregator with
        a SIGSEGV in a librdkafka thread, where no Python fault handler can report it.
        """
        request = [TopicPartition(topic, partition) for topic, partition in partitions]
        reader = self._offset_reader(group)
        try:
            answered = retry_while_leaders_settle(
                lambda: reader.committed(request, timeout=self.timeout), self.timeout
            )
        except KafkaException as exc:
            raise KafkaError(f"could not read committed offsets of group {group}: {_describe(exc)}") from exc
        return {(tp.topic, tp.partition): tp.offset for tp in answered if tp.error is None and tp.offset >= 0}

    def _offset_reader(self, group: str) -> Consumer:
        reader = self._offset_readers.get(group)
        if reader is None:
            config = client_config(
                self.settings, _librdkafka_logger, **{"group.id": group, "enable.auto.commit": False}
            )
            reader = self._offset_readers[group] = Consumer(config)
        return reader

    def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The end (high watermark) offset of each partition."""
        return self._list_offsets(list(partitions), OffsetSpec.latest())  # type: ignore[no-untyped-call]

    def _metadata(self) -> Any:
        try:
            return self._client.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise BrokerUnavailableError(self.settings.bootstrap_servers, detail=_describe(exc)) from exc

    def _partitions(self, topics: Iterable[str]) -> list[tuple[str, int]]:
        metadata = self._metadata()
        pairs: list[tuple[str, int]] = []
        for name in topics:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                raise TopicError(f"topic {name} does not exist", topic=name)
            pairs.extend((name, partition) for partition in sorted(topic.partitions))
        return pairs

    def _list_offsets(self, partitions: list[tuple[str, int]], spec: Any) -> dict[tuple[str, int], int]:
        return retry_while_leaders_settle(lambda: self._list_offsets_once(partitions, spec), self.timeout)

    def _list_offsets_once(self, partitions: list[tuple[str, int]], spec: Any) -> dict[tuple[str, int], int]:
        request = {TopicPartition(topic, partition): spec for topic, partition in partitions}
        futures = self._call("list offsets", self._client.list_offsets, request)
        return {
            (tp.topic, tp.partition): self._result(future, f"offsets of {tp.topic}[{tp.partition}]").offset
            for tp, future in futures.items()
        }

    def _check_existing(self, spec: TopicSpec, partitions: int) -> None:
        if partitions < spec.partitions:
            raise TopicError(
                f"topic {spec.name} exists with {partitions} partitions but needs at least "
                f"{spec.partitions}; add partitions (kafka-topics --alter) or use another prefix",
                topic=spec.name,
            )
        if spec.compacted and "compact" not in self._cleanup_policy(spec.name):
            raise TopicError(
                f"topic {spec.name} exists but is not compacted (cleanup.policy must include "
                "'compact'); delete it or use another prefix",
                topic=spec.name,
            )

    def _cleanup_policy(self, topic: str) -> str:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        futures = self._call("describe configs", self._client.describe_configs, [resource])
        entries = self._result(next(iter(futures.values())), f"configuration of {topic}")
        entry = entries.get("cleanup.policy")
        return "" if entry is None else str(entry.value)

    def _create(self, specs: list[TopicSpec]) -> tuple[list[str], list[str]]:
        if not specs:
            return [], []
        new_topics = [
            NewTopic(spec.name, spec.partitions, spec.replication_factor, config=dict(spec.config))
            for spec in specs
        ]
        futures = self._call(
            "create topics", self._client.create_topics, new_topics, operation_timeout=self.timeout
        )
        created, raced = [], []
        for name, future in futures.items():
            if self._created(name, future):
                created.append(name)
            else:
                raced.append(name)
        return created, raced

    def _created(self, name: str, future: Future[Any]) -> bool:
        try:
            future.result(timeout=self.timeout)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == RawKafkaError.TOPIC_ALREADY_EXISTS:
                return False  # another process created it between our check and our request
            raise TopicError(f"could not create topic {name}: {_describe(exc)}", topic=name) from exc
        logger.info("created topic %s", name)
        return True

    def _wait_visible(self, names: list[str]) -> None:
        # Creation returns once the controller has it; wait until metadata shows every partition
        # with a leader, so that producers and consumers started right after find it.
        deadline = time.monotonic() + self.timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            metadata = self._metadata()
            pending = {name for name in pending if not _has_leaders(metadata.topics.get(name))}
            if pending:
                time.sleep(0.05)
        if pending:
            raise TopicError(f"topics {sorted(pending)} were created but have no leaders yet")

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, request_timeout=self.timeout, **kwargs)
        except KafkaException as exc:
            raise KafkaError(f"{what} failed: {_describe(exc)}") from exc

    def _result(self, future: Future[T], what: str) -> T:
        try:
            return future.result(timeout=self.timeout + 1)
        except KafkaException as exc:
            raise KafkaError(f"could not read {what}: {_describe(exc)}") from exc
        except TimeoutError as exc:
            raise KafkaError(f"no answer for {what} within {self.timeout} s") from exc


def probe(settings: KafkaSettings, timeout: float = 10.0) -> int:
    """Raise BrokerUnavailableError unless a broker answers within ``timeout`` seconds."""
    return KafkaAdmin(settings, timeout=timeout).probe()


def ensure_topics(settings: KafkaSettings, registry: TopicRegistry, *, timeout: float = 30.0) -> EnsureResult:
    """Create the topics of ``registry`` that are missing (see :meth:`KafkaAdmin.ensure_topics`)."""
    return KafkaAdmin(settings, timeout=timeout).ensure_topics(registry)


def group_lag(
    settings: KafkaSettings, group: str, topics: Iterable[str], *, timeout: float = 10.0
) -> GroupLag:
    """Lag of ``group`` on ``topics`` (see :meth:`KafkaAdmin.group_lag`)."""
    return KafkaAdmin(settings, timeout=timeout).group_lag(group, topics)


def _has_leaders(topic: Any) -> bool:
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(partition.leader >= 0 for partition in topic.partitions.values())


def retry_while_leaders_settle(call: Callable[[], T], timeout: float) -> T:
    """``call()``, retried for up to ``timeout`` s while Kafka answers with a retriable error.

    A partition whose leader was elected moments ago (a topic just created, a broker just back)
    answers NOT_LEADER for a short while; an offsets query then deserves another try, not a failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (KafkaException, KafkaError) as exc:
            if not _retriable(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def _retriable(exc: KafkaException | KafkaError) -> bool:
    cause = exc if isinstance(exc, KafkaException) else exc.__cause__
    if isinstance(cause, KafkaException) and cause.args and isinstance(cause.args[0], RawKafkaError):
        error = cause.args[0]
        return bool(error.retriable()) or error.code() in _LEADERSHIP_CODES
    return False


def _describe(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    if isinstance(error, RawKafkaError):
        return f"{error.name()}: {error.str()}"
    return str(exc)
