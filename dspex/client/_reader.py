"""Reading chosen partitions of a topic without a consumer group: the client's view of the cluster.

A job's records are keyed by its id, so they all sit in one partition of the scores and status
topics (``dspex.streams.partitioner``); the client assigns itself that partition from an offset
it knows is early enough, and filters by key. Calls block (librdkafka); async callers run them
with ``asyncio.to_thread``, one call at a time per reader.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as RawKafkaError

from dspex.errors import BrokerUnavailableError, KafkaError, TopicError
from dspex.streams.admin import retry_while_leaders_settle
from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.fetch import consume_ready
from dspex.streams.partitioner import partition_for

__all__ = ["AsyncPartitionReader", "PartitionReader", "keyed"]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("dspex.streams.librdkafka.client")

_BATCH = 1000
R = TypeVar("R")


class PartitionReader:
    """Some partitions of one topic, read from given offsets (no group: nothing is committed)."""

    def __init__(self, settings: KafkaSettings, topic: str, *, timeout: float = 10.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._settings = settings
        config = {
            # librdkafka wants a group id even for assign(); it is never joined or committed.
            "group.id": f"dspex-client-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # Reads are short and want their answer now, not after the broker's 500 ms long poll.
            "fetch.wait.max.ms": 50,
        }
        self._consumer = Consumer(client_config(settings, _librdkafka_logger, **config))
        self._positions: dict[int, int] = {}

    def close(self) -> None:
        """Leave the partitions and close the connection."""
        self._consumer.close()

    def partition_count(self) -> int:
        """How many partitions the topic has (TopicError when it does not exist)."""
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=self.timeout)
        except KafkaException as exc:
            raise BrokerUnavailableError(self._settings.bootstrap_servers, detail=str(exc)) from exc
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise TopicError(f"topic {self.topic} does not exist", topic=self.topic)
        return len(topic.partitions)

    def partition_of(self, key: str) -> int:
        """The partition records keyed ``key`` go to (Kafka's murmur2 partitioner)."""
        return partition_for(key, self.partition_count())

    def end_offset(self, partition: int) -> int:
        """The partition's high watermark: the offset the next record will get."""
        return self._watermarks(partition)[1]

    def offset_for_time(self, partition: int, timestamp_ms: int) -> int:
        """The first offset whose record is no older than ``timestamp_ms`` (the end if none is)."""
        request = [TopicPartition(self.topic, partition, timestamp_ms)]
        try:
            found = retry_while_leaders_settle(
                lambda: self._consumer.offsets_for_times(request, timeout=self.timeout), self.timeout
            )
        except KafkaException as exc:
            raise KafkaError(f"could not look up offsets of {self.topic}: {exc}", topic=self.topic) from exc
        offset = found[0].offset
        return offset if offset >= 0 else self.end_offset(partition)

    def assign(self, starts: Mapping[int, int | None]) -> None:
        """Read these partitions, each from its offset (None: from the beginning)."""
        assignment = [
            TopicPartition(self.topic, p, OFFSET_BEGINNING if start is None else start)
            for p, start in starts.items()
        ]
        self._consumer.assign(assignment)
        self._positions = {p: (start or 0) for p, start in starts.items()}

    def poll(self, timeout: float) -> list[Message]:
        """The next records (possibly none) within ``timeout`` seconds."""
        messages = consume_ready(self._consumer, _BATCH, timeout)
        return [message for message in messages if self._keep(message)]

    def read_to_end(self) -> list[Message]:
        """Every record from the current positions up to the ends as they are now."""
        ends = self.ends()
        found: list[Message] = []
        deadline = time.monotonic() + self.stall_timeout
        while not self.reached(ends):
            if time.monotonic() > deadline:
                raise KafkaError(f"reading {self.topic} to its end took too long", topic=self.topic)
            found.extend(self.poll(0.2))
        return found

    @property
    def stall_timeout(self) -> float:
        """How long a read to the end may go without reaching it (or, streamed, without a record)."""
        return max(self.timeout, 30.0)

    def ends(self) -> dict[int, int]:
        """The end offset of every assigned partition, as it is now."""
        return {p: self.end_offset(p) for p in self._positions}

    def reached(self, ends: Mapping[int, int]) -> bool:
        """Whether every partition in ``ends`` was read up to its offset there."""
        return all(self._positions[p] >= end for p, end in ends.items())

    def _keep(self, message: Message) -> bool:
        error = message.error()
        partition = int(message.partition() or 0)
        if error is None:
            self._positions[partition] = int(message.offset() or 0) + 1
            return True
        if error.code() == RawKafkaError._PARTITION_EOF:
            # The end as the broker saw it: past any offsets compaction removed near the end.
            self._positions[partition] = max(self._positions.get(partition, 0), int(message.offset() or 0))
        else:
            logger.warning("reading %s[%s]: %s", self.topic, partition, error)
        return False

    def _watermarks(self, partition: int) -> tuple[int, int]:
        where = TopicPartition(self.topic, partition)
        try:
            low, high = retry_while_leaders_settle(
                lambda: self._consumer.get_watermark_offsets(where, timeout=self.timeout), self.timeout
            )
        except KafkaException as exc:
            raise KafkaError(
                f"could not read offsets of {self.topic}[{partition}]: {exc}", topic=self.topic
            ) from exc
        return int(low), int(high)


def keyed(messages: Iterable[Message], key: str) -> list[Any]:
    """The values of the records whose key is ``key``, in order."""
    wanted = key.encode("utf-8")
    return [message.value() for message in messages if message.key() == wanted]


class AsyncPartitionReader:
    """A :class:`PartitionReader` driven from asyncio: every call runs on one thread of its own, in
    order, so closing never races a poll still running after its caller was cancelled."""

    def __init__(self, settings: KafkaSettings, topic: str, *, timeout: float = 10.0) -> None:
        self._settings, self._topic, self._timeout = settings, topic, timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dspex-client-reader")
        self._reader: PartitionReader | None = None

    async def __aenter__(self) -> PartitionReader:
        self._reader = await self.run(PartitionReader, self._settings, self._topic, timeout=self._timeout)
        return self._reader

    async def __aexit__(self, *exc_info: object) -> None:
        if self._reader is not None:
            await self.run(self._reader.close)
        self._executor.shutdown(wait=False)

    async def run(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)`` on the reader's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
