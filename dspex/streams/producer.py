"""An asyncio face on confluent-kafka's idempotent producer.

``await producer.produce(...)`` returns once the broker acknowledged the record, which is what a
consumer handler awaits before its input offset may be committed. ``await producer.send(...)``
returns as soon as the record is queued (so records keep their order) with a future for the
acknowledgement, for callers that want many records in flight.

A thread polls the producer so delivery reports arrive without anyone calling ``poll()``; the
reports are handed to the event loop in batches, one ``call_soon_threadsafe`` wake-up for all the
reports that arrived since the loop last took them (one per record cost a self-pipe write and a
loop wake-up each, a few percent of a predictor's CPU). When librdkafka's queue is full the
producer waits and retries instead of dropping the record.

librdkafka 2.x can leave a partition undeliverable for good once a produce response names its new
leader as -1 (what a broker shutting down answers when no other replica can lead; librdkafka issue
5430, still open): records for it wait until ``message.timeout.ms`` and fail, however soon the
broker is back. Its one sign is a ``METADATAUPDATE ... new leader-1 not found in cache`` log line.
When a producer logs it, the poll thread puts a fresh librdkafka producer in its place and purges
the records still queued in the old one; each purged record is sent again through the new one,
with its original future, so callers see one acknowledgement and nothing is lost. (Re-sent records
may land after newer ones of the same partition: readers here take the first record per key.)

    >>> async with AsyncProducer(KafkaSettings()) as producer:  # doctest: +SKIP
    ...     delivery = await producer.produce("dspex.tasks", b"{...}", key=b"task-1")
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError as RawKafkaError
from confluent_kafka import KafkaException, Message, Producer

from dspex.errors import KafkaError
from dspex.observability import metrics
from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.outage import REACHABILITY
from dspex.streams.serde import RawHeaders, Record, message_position
from dspex.streams.topics import LARGE_MESSAGE_BYTES

__all__ = ["PRODUCER_DEFAULTS", "STREAMING_LINGER_MS", "AsyncProducer", "Delivery", "ProducerStats"]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("dspex.streams.librdkafka.producer")

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    # faust/aiokafka and Java hash keys with murmur2; librdkafka's default hash differs, and a key
    # must land on the same partition whichever client wrote it.
    "partitioner": "murmur2_random",
    # lz4, not zstd: the records are small batches of JSON, and zstd's per-batch cost showed in every
    # producer's CPU. One dev broker, 6,000 score records (1,712 B) per run, linger 20 ms, codecs
    # alternating: the producer's CPU per record 0.058-0.068 ms with zstd, 0.050-0.055 with lz4 at
    # 1,500 records/s (small batches), 0.041-0.043 against 0.032-0.041 at 3,000/s; the broker's
    # within noise. aiokafka (the aggregator) reads lz4 through cramjam, as it read zstd.
    "compression.type": "lz4",
    "linger.ms": 5,  # librdkafka's default; workers' steady streams use STREAMING_LINGER_MS
    "message.max.bytes": LARGE_MESSAGE_BYTES,
}
# For producers writing a steady stream (the workers' predictions and scores): fewer, larger produce
# requests, since the broker's CPU goes mostly per request. Measured on the pipeline benchmark's
# stack (6,000 tasks at 100 ms, mean of 3 jobs): broker 0.39-0.40 ms of CPU per example with every
# producer at 5 ms, 0.28-0.31 at 20 ms, 0.25 at 50 ms. It adds up to 20 ms per hop to a record's
# latency, so clients, whose small jobs wait on each acknowledgement, keep 5 ms.
STREAMING_LINGER_MS = 20
# librdkafka's statistics (tx counts, queue depth) every 5 s, exported as Prometheus metrics.
_STATISTICS_INTERVAL_MS = 5_000

_POLL_INTERVAL_S = 0.05
_FULL_QUEUE_FIRST_WAIT_S = 0.001
_FULL_QUEUE_MAX_WAIT_S = 0.05


@dataclass(frozen=True)
class Delivery:
    """Where the broker stored an acknowledged record."""

    topic: str
    partition: int
    offset: int


@dataclass
class ProducerStats:
    """Counters of one producer (plain numbers, for tests and metrics)."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    queue_full_waits: int = 0
    replaced: int = 0  # librdkafka producers replaced after a lost partition leader (see above)
    resent: int = 0  # records sent again through a replacement


class AsyncProducer:
    """Idempotent, lz4-compressed, murmur2-partitioned producer usable from asyncio."""

    def __init__(self, settings: KafkaSettings, *, config: dict[str, Any] | None = None) -> None:
        """``config`` overrides librdkafka properties (the defaults are PRODUCER_DEFAULTS)."""
        statistics = {"statistics.interval.ms": _STATISTICS_INTERVAL_MS, "stats_cb": _statistics}
        overrides = {**PRODUCER_DEFAULTS, **statistics, **(config or {})}
        self._leader_lost = threading.Event()
        log = _LibrdkafkaLog(self._leader_lost)
        self._config = client_config(settings, log, **overrides)
        try:
            self._producer = Producer(self._config)
        except KafkaException as exc:
            raise KafkaError(f"could not create a producer: {exc}") from exc
        # Replaced producers, polled until the records they still hold are delivered or purged.
        self._retired: list[Producer] = []
        self._resending: set[asyncio.Task[None]] = set()
        self.settings = settings
        self.stats = ProducerStats()
        self._stopping = threading.Event()
        self._reports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _DeliveryReports] = (
            weakref.WeakKeyDictionary()
        )
        self._reports_lock = threading.Lock()
        self._poller = threading.Thread(target=self._serve_callbacks, name="dspex-producer-poll", daemon=True)
        self._poller.start()

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def warm_up(self, timeout: float) -> None:
        """Connect and learn every topic's partition leaders now (one metadata request): a fresh
        producer's first record otherwise waits for that, measured at 0.5-1 s on a dev broker.
        Failing here changes nothing: the first record reports the error as it would have."""
        try:
            await asyncio.to_thread(self._producer.list_topics, None, timeout)
        except KafkaException as exc:
            logger.debug("producer warm-up: %s", _describe(exc))

    async def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | str | None = None,
        headers: RawHeaders | None = None,
        partition: int | None = None,
    ) -> Delivery:
        """Send one record and return once the broker acknowledged it (KafkaError if it failed)."""
        acknowledged = await self.send(topic, value, key=key, headers=headers, partition=partition)
        return await acknowledged

    async def produce_record(self, topic: str, record: Record) -> Delivery:
        """:meth:`produce` for a :class:`~dspex.streams.serde.Record`."""
        return await self.produce(topic, record.value, key=record.key, headers=record.headers)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | str | None = None,
        headers: RawHeaders | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Delivery]:
        """Queue one record; the returned future resolves when the broker acknowledged it.

        Records queued by successive ``send`` calls keep their order. While librdkafka's queue is
        full this waits (backing off up to 50 ms) rather than dropping the record.
        """
        loop = asyncio.get_running_loop()
        acknowledged: asyncio.Future[Delivery] = loop.create_future()
        kwargs: dict[str, Any] = {"value": value, "key": key, "headers": headers}
        if partition is not None:
            kwargs["partition"] = partition
        kwargs["on_delivery"] = self._reporter(loop, acknowledged)
        await self._enqueue(topic, kwargs)
        self.stats.sent += 1
        return acknowledged

    async def flush(self, timeout: float = 30.0) -> int:
        """Wait until every queued record was acknowledged; returns how many are still queued."""
        deadline = time.monotonic() + timeout
        remaining = int(await asyncio.to_thread(self._producer.flush, timeout))
        while (self._retired or self._resending) and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_INTERVAL_S)  # the poll thread drains replaced producers
            remaining = int(await asyncio.to_thread(self._producer.flush, 0))
        return remaining + sum(len(retired) for retired in list(self._retired))

    async def aclose(self, timeout: float = 30.0) -> None:
        """Flush (bounded by ``timeout``) and stop the callback thread."""
        if self._stopping.is_set():
            return
        remaining = await self.flush(timeout)
        if remaining:
            logger.warning("producer closed with %s records not acknowledged after %s s", remaining, timeout)
        self._stopping.set()
        await asyncio.to_thread(self._poller.join)

    def __len__(self) -> int:
        """Records queued and not yet acknowledged (librdkafka counts its unserved events too)."""
        return len(self._producer) + sum(len(retired) for retired in list(self._retired))

    async def _enqueue(self, topic: str, kwargs: dict[str, Any]) -> None:
        wait = _FULL_QUEUE_FIRST_WAIT_S
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:
                # The local queue is full: the poll thread drains it as the broker acknowledges.
                self.stats.queue_full_waits += 1
                await asyncio.sleep(wait)
                wait = min(wait * 2, _FULL_QUEUE_MAX_WAIT_S)
            except KafkaException as exc:
                raise KafkaError(f"could not produce to {topic}: {_describe(exc)}", topic=topic) from exc

    def _reporter(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Delivery]) -> Any:
        reports = self._reports_for(loop)

        def report(error: RawKafkaError | None, message: Message) -> None:
            # Runs on the poll thread (or a flush's): queued for the loop that is waiting for it.
            reports.put(future, error, message)

        return report

    def _reports_for(self, loop: asyncio.AbstractEventLoop) -> _DeliveryReports:
        reports = self._reports.get(loop)
        if reports is None:
            with self._reports_lock:
                reports = self._reports.setdefault(loop, _DeliveryReports(loop, self._settle))
        return reports

    def _settle(
        self, future: asyncio.Future[Delivery], error: RawKafkaError | None, message: Message
    ) -> None:
        if error is not None and error.code() == RawKafkaError._PURGE_QUEUE:
            # Purged by _replace_producer (only ours purge): sent again even when its caller gave
            # up waiting (a cancelled handler), since the record may be all that reports its work.
            self._resend(future, message)
            return
        metrics.producer_delivery(str(message.topic()), error is None)
        if error is None:
            REACHABILITY.reachable()  # the first delivery after an outage ends it in the log
            self.stats.delivered += 1
            outcome: Delivery | KafkaError = Delivery(*message_position(message))
        else:
            self.stats.failed += 1
            outcome = KafkaError(
                f"delivery to {message.topic()} failed: {error.name()}: {error.str()}",
                topic=str(message.topic()),
                partition=message.partition(),
            )
        if future.done():
            return  # the caller gave up waiting (cancelled); the outcome is counted all the same
        if isinstance(outcome, KafkaError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def _resend(self, future: asyncio.Future[Delivery], message: Message) -> None:
        topic = str(message.topic())
        kwargs: dict[str, Any] = {
            "value": message.value(),
            "key": message.key(),
            "headers": message.headers(),
        }
        partition = message.partition()
        if partition is not None and partition >= 0:
            kwargs["partition"] = partition  # where the partitioner put it the first time
        kwargs["on_delivery"] = self._reporter(future.get_loop(), future)
        task = asyncio.get_running_loop().create_task(self._enqueue_for(future, topic, kwargs))
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)

    async def _enqueue_for(
        self, future: asyncio.Future[Delivery], topic: str, kwargs: dict[str, Any]
    ) -> None:
        try:
            await self._enqueue(topic, kwargs)
        except KafkaError as exc:
            if not future.done():
                future.set_exception(exc)
            return
        self.stats.resent += 1

    def _serve_callbacks(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(_POLL_INTERVAL_S)
            if self._leader_lost.is_set():
                self._leader_lost.clear()
                self._replace_producer()
            if self._retired:
                self._drain_retired()

    def _replace_producer(self) -> None:
        """(Poll thread) Put a fresh librdkafka producer in place of one that lost a leader."""
        try:
            fresh = Producer(self._config)
        except KafkaException as exc:
            logger.error("could not replace a producer that lost a partition leader: %s", exc)
            return
        retired, self._producer = self._producer, fresh
        self._retired.append(retired)
        self.stats.replaced += 1
        logger.warning(
            "a produce response named leader -1 for a partition, which librdkafka never recovers from "
            "(issue 5430): replaced the producer; of its %s unacknowledged records, the queued ones "
            "are sent again and those in flight complete where they are",
            len(retired),
        )

    def _drain_retired(self) -> None:
        """(Poll thread) Purge what replaced producers still queue (their reports re-send it) and
        drop each once nothing is left in it; records in flight complete there as usual."""
        for retired in list(self._retired):
            retired.purge(in_queue=True, in_flight=False)
            retired.poll(0)
            if len(retired) == 0:
                self._retired.remove(retired)


class _LibrdkafkaLog(logging.LoggerAdapter[logging.Logger]):
    """librdkafka's log lines to Python logging, watching for the lost-leader line (see above)."""

    def __init__(self, leader_lost: threading.Event) -> None:
        super().__init__(_librdkafka_logger, {})
        self._leader_lost = leader_lost

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        # confluent-kafka calls log(level, "%s [%s] %s", facility, client name, text)
        if len(args) == 3 and args[0] == "METADATAUPDATE" and "new leader-1 not found" in str(args[2]):
            self._leader_lost.set()
        super().log(level, msg, *args, **kwargs)


_Report = tuple[asyncio.Future[Delivery], RawKafkaError | None, Message]


class _DeliveryReports:
    """Delivery reports bound for one event loop, handed over in batches.

    ``put`` (any thread) queues a report and wakes the loop only when no hand-over is pending;
    the loop then settles everything queued so far, in the order librdkafka reported it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, settle: Callable[..., None]) -> None:
        # weakly: the producer keys these by loop in a WeakKeyDictionary, which a strong reference
        # from the value would keep alive forever
        self._loop = weakref.ref(loop)
        self._settle = settle
        self._queued: deque[_Report] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False

    def put(self, future: asyncio.Future[Delivery], error: RawKafkaError | None, message: Message) -> None:
        with self._lock:
            self._queued.append((future, error, message))
            if self._wake_pending:
                return
            self._wake_pending = True
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("event loop gone")
            loop.call_soon_threadsafe(self._settle_queued)
        except RuntimeError:
            logger.debug("delivery report for %s arrived after its event loop closed", message.topic())

    def _settle_queued(self) -> None:
        with self._lock:
            queued, self._queued = self._queued, deque()
            self._wake_pending = False
        for future, error, message in queued:
            try:
                self._settle(future, error, message)
            except Exception:  # one report must not strand the others of its batch unsettled
                logger.exception("settling the delivery report for %s failed", message.topic())


def _statistics(document: str) -> None:
    # Runs on the poll thread; a bad document must not break delivery reports.
    try:
        metrics.kafka_client_stats("producer", json.loads(document))
    except (ValueError, TypeError) as exc:
        logger.debug("unreadable librdkafka statistics: %s", exc)


def _describe(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    if isinstance(error, RawKafkaError):
        return f"{error.name()}: {error.str()}"
    return str(exc)
