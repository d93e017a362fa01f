"""A local, always-following copy of a compacted topic (candidates, status).

:class:`CompactedReader` assigns itself every partition of the topic without joining a consumer
group (every process wants all of it), reads from the beginning into ``key -> latest value``
(a tombstone deletes the key) and keeps following. Values that do not decode are logged and
skipped: a reader has no one to hand them to, and the writer's consumer dead-letters its own.

    >>> topic = registry.name("candidates")
    >>> async with CompactedReader(settings, topic, decoder=ProgramSpec) as specs:  # doctest: +SKIP
    ...     spec = await specs.wait_for(candidate_id, timeout=30)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as RawKafkaError
from pydantic import BaseModel

from dspex.errors import KafkaError, SchemaError, TopicError
from dspex.schemas import decode
from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.fetch import consume_ready

__all__ = ["CompactedReader"]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("dspex.streams.librdkafka.reader")

V = TypeVar("V")
R = TypeVar("R")
_BATCH = 500


class CompactedReader(Generic[V]):
    """``key -> latest value`` of one compacted topic, kept up to date in the background."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        decoder: type[BaseModel] | Callable[[bytes], V] | None = None,
        poll_timeout: float = 0.1,
        metadata_timeout: float = 10.0,
    ) -> None:
        """``decoder`` is a model type (dspex.schemas.decode), a callable on the value bytes, or
        None to keep the bytes."""
        self.settings = settings
        self.topic = topic
        self.skipped = 0
        self._decode = _as_decoder(decoder)
        self._poll_timeout = poll_timeout
        self._metadata_timeout = metadata_timeout
        self._values: dict[str, V] = {}
        self._tombstoned: set[str] = set()  # keys whose latest record is a tombstone
        self._waiters: dict[str, list[asyncio.Future[V]]] = {}
        self._not_at_end: set[int] = set()
        self._caught_up = asyncio.Event()
        self._consumer: Consumer | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dspex-reader")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> CompactedReader[V]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Assign every partition from the beginning and start following in the background."""
        partitions = await self._on_thread(self._open)
        self._not_at_end = set(partitions)
        self._task = asyncio.create_task(self._follow(), name=f"dspex-reader-{self.topic}")

    async def aclose(self) -> None:
        """Stop following and close the consumer."""
        self._closing = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._on_thread(self._close)
        self._thread.shutdown(wait=False)
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.cancel()

    async def wait_caught_up(self, timeout: float) -> None:
        """Wait until everything on the topic when the reader started has been read."""
        await asyncio.wait_for(self._caught_up.wait(), timeout)

    async def wait_for(self, key: str, timeout: float) -> V:
        """The value of ``key``, waiting up to ``timeout`` s for it to appear (else TimeoutError)."""
        if key in self._values:
            return self._values[key]
        waiter: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        finally:
            waiters = self._waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)

    def get(self, key: str) -> V | None:
        """The latest value of ``key``, or None."""
        return self._values.get(key)

    def tombstoned(self, key: str) -> bool:
        """Whether the latest record of ``key`` read is a tombstone (the key was deleted)."""
        return key in self._tombstoned

    def snapshot(self) -> dict[str, V]:
        """A copy of the current ``key -> latest value`` map."""
        return dict(self._values)

    def __len__(self) -> int:
        return len(self._values)

    async def _follow(self) -> None:
        while not self._closing:
            messages = await self._on_thread(self._fetch)
            for message in messages:
                self._apply(message)

    def _apply(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            self._note_error(message, error)
            return
        raw_key = message.key()
        if raw_key is None:
            return  # a compacted topic cannot keep keyless records
        key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else str(raw_key)
        value = message.value()
        if value is None:
            self._values.pop(key, None)  # tombstone
            self._tombstoned.add(key)
            return
        self._tombstoned.discard(key)
        self._store(key, value, message)

    def _store(self, key: str, value: Any, message: Message) -> None:
        try:
            decoded = self._decode(value)
        except SchemaError as exc:
            self.skipped += 1
            logger.warning("skipping %s[%s]@%s: %s", self.topic, message.partition(), message.offset(), exc)
            return
        self._values[key] = decoded
        for waiter in self._waiters.pop(key, []):
            if not waiter.done():
                waiter.set_result(decoded)

    def _note_error(self, message: Message, error: RawKafkaError) -> None:
        if error.code() == RawKafkaError._PARTITION_EOF:
            self._not_at_end.discard(int(message.partition() or 0))
            if not self._not_at_end:
                self._caught_up.set()
        else:
            logger.warning("reader of %s: %s", self.topic, error)

    async def _on_thread(self, fn: Callable[..., R], *args: Any) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args))

    def _open(self) -> list[int]:
        config = client_config(
            self.settings,
            _librdkafka_logger,
            **{
                # librdkafka wants a group id even for assign(); it is never joined or committed.
                "group.id": f"dspex-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
        try:
            self._consumer = Consumer(config)
            metadata = self._consumer.list_topics(self.topic, timeout=self._metadata_timeout)
        except KafkaException as exc:
            raise KafkaError(f"could not read metadata of {self.topic}: {exc}", topic=self.topic) from exc
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise TopicError(f"topic {self.topic} does not exist", topic=self.topic)
        partitions = sorted(topic.partitions)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        return partitions

    def _fetch(self) -> list[Message]:
        if self._consumer is None:
            return []
        return consume_ready(self._consumer, _BATCH, self._poll_timeout)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _as_decoder(decoder: type[BaseModel] | Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    if decoder is None:
        return _identity
    if isinstance(decoder, type) and issubclass(decoder, BaseModel):
        return functools.partial(_decode_model, decoder)
    return decoder


def _decode_model(model_type: type[BaseModel], value: bytes) -> Any:
    return decode(value, model_type)


def _identity(value: bytes) -> bytes:
    return value
