"""The async consumer runtime every processor stands on.

One :class:`ConsumerRuntime` is one member of a consumer group. It runs a handler coroutine per
message, at most ``max_in_flight`` at once; a handler returns once the message's output has been
acknowledged by the broker, and only then does the message count as done. Around that:

* backpressure: above the high watermark of outstanding messages every assigned partition is
  paused (polling goes on, so the member stays in the group), below the low watermark they
  resume; partitions assigned while paused are paused at once;
* read-ahead and dispatch order: received messages wait in a backlog (``backlog``: arrival order
  unless the processor brings a scheduler, as the predictor does with its per-job fair queue) until
  a handler slot is free; ``max_backlog_bytes`` bounds its bytes as the watermarks bound its count,
  and ``dispatch_limit`` may hold the running handlers below ``max_in_flight`` for a while;
* holding: :meth:`~ConsumerRuntime.pause_all` pauses every partition whatever the watermarks
  say, until :meth:`~ConsumerRuntime.resume_all` (a worker does it while an LM endpoint is down);
* contiguous commits: per partition, the committed offset never passes a message that is not
  done (:class:`~dspex.streams.flow.OffsetTracker`); commits go out asynchronously every
  ``commit_interval`` and synchronously on revoke and stop;
* drain: on revoke (and on :meth:`~ConsumerRuntime.stop`, which SIGTERM should call) handlers of
  the partitions being given up get ``drain_timeout`` seconds to finish; whatever is left is
  cancelled and stays uncommitted, so the next owner handles it again (at-least-once);
* rejoining: a member that stays out of its group (librdkafka's group state, read from its
  statistics every 5 s) for ``rejoin_after`` seconds gives up its partitions as lost and replaces
  its consumer with a new one, which joins as a new member (see :class:`MembershipWatch`);
* dead letters: a message whose value does not decode (SchemaError), that the handler declares
  poison (PoisonMessageError), or on which the handler raises any other exception is written
  to the DLQ topic as a DeadLetter (original bytes, headers, topic/partition/offset, error) and
  then counts as done. Handler exceptions are dead-lettered too (reason ``handler_error``) rather
  than retried: an at-least-once consumer that retries a deterministic failure loops forever.
  Handlers that want retries for transient failures (LM calls) do them inside.

Threads: every call on the confluent-kafka Consumer runs on one dedicated thread, so the
consumer is never used concurrently; rebalance callbacks run there too (inside ``consume``)
and hand their work to the event loop, which is free while it awaits that thread.

    >>> async def handle(message, task):
    ...     await producer.produce(out_topic, encode(result_for(task)), key=message.key())
    >>> options = ConsumerOptions(group_id="dspex.predictor", topics=["dspex.tasks"],
    ...                           dlq_topic="dspex.dlq")
    >>> runtime = ConsumerRuntime(settings, options, handler=handle, decoder=Task,
    ...                           producer=producer)  # doctest: +SKIP
    >>> runtime.install_signal_handlers()  # doctest: +SKIP
    >>> await runtime.run()  # until SIGTERM  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as RawKafkaError
from pydantic import BaseModel

from dspex.errors import ConfigurationError, KafkaError
from dspex.observability import metrics
from dspex.schemas import (
    DLQ_REASON_HANDLER_ERROR,
    KNOWN_DLQ_REASONS,
    DeadLetter,
)
from dspex.streams.config import KafkaSettings
from dspex.streams.consumer_options import ConsumerOptions, consumer_config, default_rejoin_after
from dspex.streams.dlq import dead_letter
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
from dspex.streams.serde import message_position, model_decoder

__all__ = [
    "CommitHook",
    "ConsumerOptions",
    "ConsumerRuntime",
    "Decoder",
    "Handler",
    "RuntimeStats",
    "message_size",
]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("dspex.streams.librdkafka.consumer")

T = TypeVar("T")
Handler = Callable[[Message, Any], Awaitable[None]]
Decoder = Callable[[Message], Any]
CommitHook = Callable[[dict[TopicPartitionKey, int]], None]
DeadLetterHook = Callable[[DeadLetter], Awaitable[None]]

_CANCEL_GRACE_S = 1.0


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


class ConsumerRuntime:
    """One consumer-group member running a handler coroutine per message (see module docs)."""

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

    # ----------------------------------------------------------------- lifespan

    async def __aenter__(self) -> ConsumerRuntime:
        self._task = asyncio.create_task(self.run(), name=f"dspex-consumer-{self.group_id}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Consume until :meth:`stop` (or a fatal error, which is raised after draining)."""
        if self._loop is not None:
            raise ConfigurationError("this ConsumerRuntime was already started; create a new one")
        self._loop = asyncio.get_running_loop()
        self._finished = asyncio.Event()
        self._assignment_seen = asyncio.Event()
        self._kafka_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dspex-consumer")
        try:
            await self._kafka(self._open)
            committer = asyncio.create_task(self._commit_periodically())
            try:
                await self._poll_until_stopped()
                await self._drain()
            finally:
                committer.cancel()
                await asyncio.gather(committer, return_exceptions=True)
        finally:
            await self._shut_down()
        if self._fatal is not None:
            raise self._fatal

    def request_stop(self) -> None:
        """Ask the runtime to drain and stop; call it on the loop (signal handlers are). Returns at once."""
        self._stop_requested = True
        self._room.set()

    async def stop(self) -> None:
        """Drain (bounded by ``drain_timeout``), commit what is done, leave the group."""
        self.request_stop()
        if self._task is not None:
            await self._task
        elif self._finished is not None:
            await self._finished.wait()

    def install_signal_handlers(
        self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Make SIGTERM (and SIGINT) drain and stop this runtime (call from the running loop)."""
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop)

    async def wait_assigned(self, timeout: float) -> None:
        """Wait until this member got its first partitions (raises TimeoutError after ``timeout``)."""
        while self._assignment_seen is None:
            await asyncio.sleep(0.01)  # run() has not started yet
        await asyncio.wait_for(self._assignment_seen.wait(), timeout)

    def request_rejoin(self) -> None:
        """Leave the group and join again as a new member, at the next poll (what the runtime does
        by itself when its member is stuck out of the group; see the module docs)."""
        self._rejoin_requested = True

    def assignment(self) -> set[TopicPartitionKey]:
        """Partitions this member owns now."""
        return set(self._assigned)

    def paused_partitions(self) -> set[TopicPartitionKey]:
        """Partitions this member has paused now."""
        return set(self._paused)

    @property
    def in_group(self) -> bool:
        """Whether librdkafka's last statistics (every 5 s) saw this member steady in its group,
        with or without partitions (a worker's /readyz)."""
        return self._in_group

    @property
    def held(self) -> bool:
        """Whether :meth:`pause_all` holds every partition paused now."""
        return self._held

    async def pause_all(self) -> None:
        """Pause every assigned partition (and any assigned later) until :meth:`resume_all`.

        Running handlers go on; polling goes on, so the member stays in the group.
        """
        self._held = True
        if self._kafka_thread is not None:
            await self._kafka(self._pause_assigned)
            self._report_partitions()

    async def resume_all(self) -> None:
        """End :meth:`pause_all`; partitions resume unless the high watermark still holds them."""
        self._held = False
        if self._kafka_thread is not None and not self._watermarks.paused:
            await self._kafka(self._resume_paused)
            self._report_partitions()

    @property
    def running(self) -> int:
        """Messages whose handler runs now (the backlog not included)."""
        return len(self._running)

    def describe_undone(self) -> str:
        """What stopping this member now would leave undone (for the log line of a forced stop)."""
        pending = self._tracker.pending_commits()
        offsets = ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(pending.items())) or "none"
        return (
            f"{len(self._running)} handlers running and {len(self._backlog)} messages read ahead are "
            f"left to the next owner; done, not yet sent for commit: {offsets}"
        )

    @property
    def outstanding(self) -> int:
        """Messages received and not yet finished: running handlers plus the backlog."""
        return len(self._running) + len(self._backlog)

    # ----------------------------------------------------------------- polling

    async def _poll_until_stopped(self) -> None:
        while not self._stop_requested:
            if self._watermarks.paused:
                # Nothing can arrive while paused: wait for room instead of blocking the consumer
                # thread in a long poll, then poll without waiting (rebalances, liveness).
                await self._wait_for_room()
                await self._apply_pressure()
            timeout = 0.0 if self._watermarks.paused else self.poll_timeout
            messages = await self._kafka(self._fetch, self._fetch_size(), timeout)
            for message in messages:
                self._accept(message)
            self._start_ready()
            await self._apply_pressure()
            if self._rejoin_requested:
                await self._rejoin()

    async def _wait_for_room(self) -> None:
        self._room.clear()
        if not self._has_room() and not self._stop_requested:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), self.poll_timeout)

    def _fetch_size(self) -> int:
        # Fetch no more than the room under the high watermark, so the backlog stays small.
        return max(1, self._watermarks.high - self.outstanding)

    def _accept(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if is_connection_error(error):
                REACHABILITY.unreachable("consumer", str(error))
            elif error.code() != RawKafkaError._PARTITION_EOF:
                logger.warning("consumer error in group %s: %s", self.group_id, error)
            return
        REACHABILITY.reachable()
        topic, partition, offset = message_position(message)
        tp = (topic, partition)
        if tp not in self._assigned:
            return  # fetched just before its partition was revoked; the new owner reads it
        self.stats.received += 1
        self._tracker.started(tp, offset)
        self._backlog.push(message)

    def _start_ready(self) -> None:
        limit = self._handler_limit()
        while len(self._backlog) and len(self._running) < limit and not self._stop_requested:
            message = self._backlog.pop()
            if message is None:
                break
            tp = message_position(message)[:2]
            if tp not in self._assigned:
                continue
            task = asyncio.create_task(self._handle(message))
            self._running[task] = tp
            task.add_done_callback(self._handler_done)
        self.stats.in_flight = len(self._running)
        self.stats.max_in_flight_seen = max(self.stats.max_in_flight_seen, len(self._running))
        self.stats.backlog = len(self._backlog)
        metrics.consumer_outstanding(self.group_id, self.outstanding)

    def _handler_limit(self) -> int:
        if self._dispatch_limit is None:
            return self.max_in_flight
        return max(1, min(self.max_in_flight, self._dispatch_limit()))

    def _fill(self) -> float:
        """How full the backlog's byte budget is (1.0: at the budget; 0.0 without one)."""
        if not self._max_backlog_bytes:
            return 0.0
        return self._backlog.nbytes / self._max_backlog_bytes

    def _has_room(self) -> bool:
        return self._watermarks.has_room(self.outstanding, self._fill())

    async def _apply_pressure(self) -> None:
        change = self._watermarks.update(self.outstanding, self._fill())
        if change == "pause":
            self.stats.pauses += 1
            await self._kafka(self._pause_assigned)
        elif change == "resume" and not self._held:
            self.stats.resumes += 1
            await self._kafka(self._resume_paused)
        if change is not None:
            self._report_partitions()

    def _report_partitions(self) -> None:
        metrics.consumer_assignment(self.group_id, len(self._assigned), len(self._paused))

    # ----------------------------------------------------------------- handling

    async def _handle(self, message: Message) -> None:
        try:
            value = self._decode(message)
            await self._handler(message, value)
            self.stats.handled += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is accounted for: dead-lettered, then done
            await self._dead_letter(message, exc)
        topic, partition, offset = message_position(message)
        self._tracker.finished((topic, partition), offset)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            # Only a failed dead letter gets here: the message is not done and must not be
            # committed, so stop and let a restart handle it again.
            self._fatal = self._fatal or task.exception()
            self.request_stop()
        self._start_ready()
        if self._has_room():
            self._room.set()

    async def _dead_letter(self, message: Message, exc: Exception) -> None:
        letter = await dead_letter(
            self._producer, self.dlq_topic, message, exc, worker_id=self.worker_id, group=self.group_id
        )
        self.stats.dead_lettered += 1
        metrics.dead_lettered(letter.reason)
        if letter.reason == DLQ_REASON_HANDLER_ERROR:
            self.stats.handler_errors += 1
        if self._on_dead_letter is not None:
            await self._on_dead_letter(letter)

    # ----------------------------------------------------------------- commits and draining

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval)
            await self._commit(asynchronous=True)

    async def _commit(self, *, asynchronous: bool) -> None:
        offsets = self._tracker.pending_commits()
        if not offsets:
            return
        if self._on_commit is not None:
            self._on_commit(dict(offsets))
        self._tracker.mark_committed(offsets)
        await self._kafka(self._commit_owned, offsets, asynchronous)

    async def _drain(self) -> None:
        # Backlog messages never started: they stay uncommitted and are read again later.
        self._backlog.clear()
        timeout = min(self.drain_timeout, self.shutdown_drain_timeout)
        await self._finish_or_cancel(list(self._running), timeout)
        await self._commit(asynchronous=False)

    async def _finish_or_cancel(self, tasks: list[asyncio.Task[None]], timeout: float) -> None:
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            self.stats.cancelled += len(pending)
            logger.warning("cancelled %s handlers still running after %.1f s", len(pending), timeout)
            await asyncio.wait(pending, timeout=_CANCEL_GRACE_S)

    async def _release(self, tps: set[TopicPartitionKey], *, lost: bool) -> dict[TopicPartitionKey, int]:
        """Give up ``tps``: drain their handlers (unless lost), return what may be committed."""
        self.stats.rebalances += 1
        self._assigned -= tps
        self._paused -= tps
        self._backlog.drop(lambda message: message_position(message)[:2] in tps)
        tasks = [task for task, tp in self._running.items() if tp in tps]
        await self._finish_or_cancel(tasks, 0 if lost else self.drain_timeout)
        offsets = (
            {} if lost else {tp: off for tp in tps if (off := self._tracker.committable(tp)) is not None}
        )
        if offsets and self._on_commit is not None:
            self._on_commit(dict(offsets))
        self._tracker.forget(tps)
        metrics.consumer_rebalanced(self.group_id)
        self._report_partitions()
        return offsets

    async def _adopt(self, tps: set[TopicPartitionKey]) -> bool:
        """Take ``tps`` on; returns whether they must be paused right away."""
        self.stats.rebalances += 1
        self._assigned |= tps
        if self._assignment_seen is not None and tps:
            self._assignment_seen.set()
        metrics.consumer_rebalanced(self.group_id)
        self._report_partitions()
        return self._watermarks.paused or self._held

    async def _rejoin(self) -> None:
        # Whatever the stuck member held is given up as lost (uncommitted work is read again by the
        # next owner); the old consumer is closed on a thread of its own, since a stuck one may
        # block in close(), and its late callbacks are ignored (they name a consumer not ours).
        self._rejoin_requested = False
        self.stats.rejoins += 1
        if self._assigned:
            await self._release(set(self._assigned), lost=True)
        stale = await self._kafka(self._detach)
        if stale is not None:
            closer = threading.Thread(
                target=_close_quietly, args=(stale, self.group_id), name="dspex-consumer-close", daemon=True
            )
            closer.start()
        await self._kafka(self._open)
        logger.warning("group %s: joined again as a new member", self.group_id)

    async def _shut_down(self) -> None:
        for task in list(self._running):
            task.cancel()
        if self._consumer is not None:
            await self._kafka(self._close)
        if self._kafka_thread is not None:
            self._kafka_thread.shutdown(wait=False)
        if self._finished is not None:
            self._finished.set()

    # ----------------------------------------------------------------- on the Kafka thread

    async def _kafka(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the thread that owns the consumer."""
        if self._loop is None or self._kafka_thread is None:
            raise ConfigurationError("the consumer runtime is not running")
        return await self._loop.run_in_executor(self._kafka_thread, functools.partial(fn, *args))

    def _open(self) -> None:
        try:
            self._generation += 1
            statistics = functools.partial(self._statistics, self._generation)
            self._consumer = Consumer({**self._consumer_config, "stats_cb": statistics})
            self._consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
        except KafkaException as exc:
            raise KafkaError(f"could not start a consumer for {self.topics}: {exc}") from exc

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

    def _commit_owned(self, offsets: Mapping[TopicPartitionKey, int], asynchronous: bool) -> None:
        # Filtered here, on the consumer's thread, so that a partition revoked after the offsets
        # were computed is never committed by its former owner.
        owned = [TopicPartition(t, p, off) for (t, p), off in offsets.items() if (t, p) in self._assigned]
        if owned and self._consumer is not None:
            self._commit_partitions(owned, asynchronous)

    def _commit_partitions(self, partitions: list[TopicPartition], asynchronous: bool) -> None:
        if self._consumer is None:
            return
        try:
            if asynchronous:
                self._consumer.commit(offsets=partitions, asynchronous=True)
            else:
                self._consumer.commit(offsets=partitions, asynchronous=False)
            self.stats.commits += 1
        except KafkaException as exc:
            self.stats.commit_failures += 1
            logger.warning("commit of %s failed in group %s: %s", _show(partitions), self.group_id, exc)

    def _close(self) -> None:
        if self._consumer is None:
            return
        try:
            self._consumer.close()  # runs on_revoke for what is still assigned: a last sync commit
        except (KafkaException, RuntimeError) as exc:
            logger.warning("closing the consumer of group %s failed: %s", self.group_id, exc)
        self._consumer = None

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return  # a replaced consumer closing (see _rejoin); confluent-kafka (un)assigns for it
        # Assign explicitly (cooperative protocol) so that the new partitions can be paused
        # before a single message of theirs is fetched.
        consumer.incremental_assign(partitions)
        tps = {(tp.topic, tp.partition) for tp in partitions}
        if self._on_loop(self._adopt(tps), default=False) and partitions:
            consumer.pause(partitions)
            self._paused |= tps
            self._report_partitions()
        elif partitions:
            # librdkafka keeps a partition's pause across revoke/lost and a later assign to the
            # same member, while _release forgot it: a partition paused when the group lost it
            # (e.g. a broker restart under load) would come back paused for good.
            consumer.resume(partitions)
        logger.info("group %s: assigned %s", self.group_id, _show(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return
        tps = {(tp.topic, tp.partition) for tp in partitions}
        offsets = self._on_loop(self._release(tps, lost=False), default={})
        if offsets:
            self._commit_partitions([TopicPartition(t, p, off) for (t, p), off in offsets.items()], False)
        logger.info("group %s: revoked %s", self.group_id, _show(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return
        tps = {(tp.topic, tp.partition) for tp in partitions}
        self._on_loop(self._release(tps, lost=True), default={})
        logger.warning("group %s: lost %s without a chance to commit", self.group_id, _show(partitions))

    def _on_loop(self, coro: Coroutine[Any, Any, T], *, default: T) -> T:
        """Run ``coro`` on the event loop from the consumer's thread and wait for its result."""
        if self._loop is None or self._loop.is_closed():
            coro.close()
            return default
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=self.drain_timeout + 2 * _CANCEL_GRACE_S + 5)
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


def _close_quietly(consumer: Consumer, group_id: str) -> None:
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        logger.warning("closing the replaced consumer of group %s failed: %s", group_id, exc)


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


def _show(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
