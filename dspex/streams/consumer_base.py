"""The consumer runtime's state and the calls it makes on its consumer's own thread.

:class:`~dspex.streams.consumer.ConsumerRuntime` is built in layers, each a module: this one
(what the runtime holds, and every call on the confluent-kafka Consumer that is not about
partitions coming and going), :mod:`~dspex.streams.consumer_rebalance` (assignment, revocation,
rejoining and the commits of owned partitions), :mod:`~dspex.streams.consumer_dispatch` (polling,
backpressure and the handlers) and :mod:`~dspex.streams.consumer` (the public surface and the
run). The module docs of :mod:`dspex.streams.consumer` describe the behaviour as a whole.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as RawKafkaError
from pydantic import BaseModel

from dspex.errors import ConfigurationError
from dspex.observability import metrics
from dspex.schemas import KNOWN_DLQ_REASONS, DeadLetter
from dspex.streams.config import KafkaSettings
from dspex.streams.consumer_options import ConsumerOptions, consumer_config, default_rejoin_after
from dspex.streams.flow import (
    Backlog,
    FifoBacklog,
    MembershipWatch,
    OffsetTracker,
    TopicPartitionKey,
    Watermarks,
)
from dspex.streams.identity import process_id
from dspex.streams.outage import REACHABILITY, is_connection_error
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import model_decoder

__all__ = [
    "CANCEL_GRACE_S",
    "CommitHook",
    "DeadLetterHook",
    "Decoder",
    "Handler",
    "RuntimeBase",
    "RuntimeStats",
    "message_size",
    "show_partitions",
]

# One logger for the whole runtime, whichever of its modules writes the line.
logger = logging.getLogger("dspex.streams.consumer")
_librdkafka_logger = logging.getLogger("dspex.streams.librdkafka.consumer")

T = TypeVar("T")
Handler = Callable[[Message, Any], Awaitable[None]]
Decoder = Callable[[Message], Any]
CommitHook = Callable[[dict[TopicPartitionKey, int]], None]
DeadLetterHook = Callable[[DeadLetter], Awaitable[None]]

CANCEL_GRACE_S = 1.0


@dataclass
class RuntimeStats:
    """Counters of one runtime: plain numbers for tests, logs and Prometheus collectors."""

    received: int = 0
    handled: int = 0
    dead_lettered: int = 0
    handler_errors: int = 0
    cancelled: int = 0
    pauses: int = 0
    resumes: int = 0
    commits: int = 0
    commit_failures: int = 0
    rebalances: int = 0
    rejoins: int = 0
    in_flight: int = 0
    max_in_flight_seen: int = 0
    backlog: int = 0


class RuntimeBase:
    """What one consumer runtime holds, and its calls on the consumer's thread (see module docs)."""

    def __init__(
        self,
        settings: KafkaSettings,
        options: ConsumerOptions,
        *,
        handler: Handler,
        producer: AsyncProducer,
        decoder: Decoder | type[BaseModel] | None = None,
        on_commit: CommitHook | None = None,
        on_dead_letter: DeadLetterHook | None = None,
        backlog: Backlog[Message] | None = None,
        dispatch_limit: Callable[[], int] | None = None,
    ) -> None:
        """Configure only; nothing connects until :meth:`run`.

        ``options`` says what to consume and how (group, topics, bounds, timing: see
        :class:`~dspex.streams.consumer_options.ConsumerOptions`). ``decoder`` turns a message
        into the handler's second argument: a pydantic model type (decoded with
        dspex.schemas.decode), a callable, or None for the raw value bytes. ``on_commit`` sees
        every offset map just before it is committed; ``on_dead_letter`` runs after a dead letter
        was acknowledged (processors use it to emit an error Score for the task). ``backlog``
        orders the messages waiting for a handler (default: arrival order); ``dispatch_limit()``
        is how many handlers may run now (capped at ``max_in_flight``).
        """
        self.options = options
        self._watermarks = Watermarks(*options.watermarks)
        self.settings = settings
        self.group_id = options.group_id
        self.topics = list(options.topics)
        self.dlq_topic = options.dlq_topic
        self.max_in_flight = options.max_in_flight
        self.drain_timeout = options.drain_timeout
        # on stop (not on revoke): a worker lowers it so that the whole stop fits its deadline
        self.shutdown_drain_timeout = options.drain_timeout
        self.commit_interval = options.commit_interval
        self.poll_timeout = options.poll_timeout
        self.worker_id = options.worker_id or process_id()
        self.stats = RuntimeStats()
        self._handler = handler
        self._producer = producer
        self._decode = _as_decoder(decoder)
        self._on_commit = on_commit
        self._on_dead_letter = on_dead_letter
        self._consumer_config = consumer_config(settings, options, _librdkafka_logger, self._commit_reported)
        rejoin_after = options.rejoin_after or default_rejoin_after(self._consumer_config)
        self._membership = MembershipWatch(rejoin_after)
        self._in_group = False  # from librdkafka's last statistics: state up, join state steady
        self._rejoin_requested = False
        self._generation = 0  # of consumers: one more each time the member is replaced
        self._tracker = OffsetTracker()
        self._backlog: Backlog[Message] = backlog if backlog is not None else FifoBacklog(message_size)
        self._max_backlog_bytes = options.max_backlog_bytes
        self._dispatch_limit = dispatch_limit
        self._running: dict[asyncio.Task[None], TopicPartitionKey] = {}
        self._restart_pending = False  # handlers ended; their successors start once (see dispatch)
        self._assigned: set[TopicPartitionKey] = set()
        self._paused: set[TopicPartitionKey] = set()
        self._held = False
        self._fatal: BaseException | None = None
        self._stop_requested = False
        self._room = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None
        self._kafka_thread: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._finished: asyncio.Event | None = None
        self._assignment_seen: asyncio.Event | None = None
        metrics.prepare_consumer(self.group_id, self.topics, self.max_in_flight)
        metrics.prepare_dlq(KNOWN_DLQ_REASONS)

    @property
    def outstanding(self) -> int:
        """Messages received and not yet finished: running handlers plus the backlog."""
        return len(self._running) + len(self._backlog)

    def _report_partitions(self) -> None:
        metrics.consumer_assignment(self.group_id, len(self._assigned), len(self._paused))

    # ----------------------------------------------------------------- on the Kafka thread

    async def _kafka(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the thread that owns the consumer."""
        if self._loop is None or self._kafka_thread is None:
            raise ConfigurationError("the consumer runtime is not running")
        return await self._loop.run_in_executor(self._kafka_thread, functools.partial(fn, *args))

    def _detach(self) -> Consumer | None:
        stale, self._consumer = self._consumer, None
        return stale

    def _fetch(self, size: int, timeout: float) -> list[Message]:
        if self._consumer is None:
            return []
        # consume() waits for ``size`` messages or the timeout (100 ms): a little latency per batch
        # while messages trickle in. consume_ready (poll() first) was tried here and a scorer did
        # not rejoin its group after a broker restart in one CI run; the readers use it, the group
        # member keeps the call its rebalance handling was tested with.
        return self._consumer.consume(size, timeout)

    def _pause_assigned(self) -> None:
        if self._consumer is None:
            return
        partitions = self._consumer.assignment()
        if partitions:
            self._consumer.pause(partitions)
        self._paused = {(tp.topic, tp.partition) for tp in partitions}

    def _resume_paused(self) -> None:
        if self._consumer is None or not self._paused:
            self._paused = set()
            return
        partitions = [TopicPartition(topic, partition) for topic, partition in self._paused]
        self._consumer.resume(partitions)
        self._paused = set()
        self._restart_fetching(partitions)

    def _restart_fetching(self, partitions: list[TopicPartition]) -> None:
        # librdkafka does not wake a broker thread that went idle with every partition paused:
        # fetching restarts at its next periodic wake-up, up to ~1 s after resume() (measured
        # here: 0.75 s on average; also confluent-kafka-go#630). Seeking each partition to its own
        # position (the next message we have not received) restarts its fetcher at once without
        # skipping or repeating anything; it runs on this thread, between two consume() calls.
        for position in self._consumer.position(partitions):  # type: ignore[union-attr]
            if position.offset >= 0:
                self._consumer.seek(position)  # type: ignore[union-attr]

    def _close(self) -> None:
        if self._consumer is None:
            return
        try:
            self._consumer.close()  # runs on_revoke for what is still assigned: a last sync commit
        except (KafkaException, RuntimeError) as exc:
            logger.warning("closing the consumer of group %s failed: %s", self.group_id, exc)
        self._consumer = None

    def _on_loop(self, coro: Coroutine[Any, Any, T], *, default: T) -> T:
        """Run ``coro`` on the event loop from the consumer's thread and wait for its result."""
        if self._loop is None or self._loop.is_closed():
            coro.close()
            return default
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=self.drain_timeout + 2 * CANCEL_GRACE_S + 5)
        except TimeoutError:
            logger.error("group %s: the event loop did not answer a rebalance in time", self.group_id)
            return default

    def _statistics(self, generation: int, document: str) -> None:
        # Runs on the consumer's thread inside consume(); a bad document must not break polling.
        try:
            stats = json.loads(document)
            metrics.kafka_client_stats("consumer", stats, group=self.group_id)
        except (ValueError, TypeError) as exc:
            logger.debug("unreadable librdkafka statistics: %s", exc)
            return
        if generation != self._generation:
            return  # from a replaced consumer, closing
        group = stats.get("cgrp") or {}
        state, join_state = group.get("state"), group.get("join_state")
        self._in_group = state == "up" and join_state == "steady"
        if self._membership.observe(state, join_state, time.monotonic()) and not self._rejoin_requested:
            logger.error(
                "group %s: this member has been out of its group for %.0f s (librdkafka group state "
                "%s, join state %s); replacing its consumer with a new member",
                self.group_id,
                self._membership.stuck_after,
                state,
                join_state,
            )
            self._rejoin_requested = True

    def _commit_reported(self, error: RawKafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is None:
            REACHABILITY.reachable()
        elif error.code() != RawKafkaError._NO_OFFSET:
            self.stats.commit_failures += 1
            if is_connection_error(error):  # Kafka is away: the outage report says so, once
                REACHABILITY.unreachable("commit", str(error))
            else:
                logger.warning("commit failed in group %s: %s", self.group_id, error)


def _as_decoder(decoder: Decoder | type[BaseModel] | None) -> Decoder:
    if decoder is None:
        return _raw_value
    if isinstance(decoder, type) and issubclass(decoder, BaseModel):
        return model_decoder(decoder)
    return decoder


def _raw_value(message: Message) -> bytes | None:
    return message.value()


def message_size(message: Message) -> int:
    """Bytes of a message's key and value: what a backlog's byte budget counts."""
    return len(message.value() or b"") + len(message.key() or b"")


def show_partitions(partitions: list[TopicPartition]) -> str:
    """``topic[partition], ...`` for a log line."""
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
