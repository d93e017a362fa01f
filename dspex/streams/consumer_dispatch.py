"""Polling, backpressure and handlers for a consumer runtime.

A layer of :class:`~dspex.streams.consumer.ConsumerRuntime` (see :mod:`dspex.streams.consumer_base`):
messages fetched wait in the backlog until a handler slot is free; the watermarks pause and
resume every partition; a handler that fails has its message dead-lettered, then done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from confluent_kafka import KafkaError as RawKafkaError
from confluent_kafka import Message

from dspex.observability import metrics
from dspex.schemas import DLQ_REASON_HANDLER_ERROR
from dspex.streams.consumer_rebalance import RebalancingRuntime
from dspex.streams.dlq import dead_letter
from dspex.streams.outage import REACHABILITY, is_connection_error
from dspex.streams.serde import message_position

__all__ = ["DispatchingRuntime"]

# One logger for the whole runtime, whichever of its modules writes the line.
logger = logging.getLogger("dspex.streams.consumer")


class DispatchingRuntime(RebalancingRuntime):
    """A consumer runtime's poll loop: fetch, queue, start handlers, pause and resume."""

    def request_stop(self) -> None:
        """Ask the runtime to drain and stop; call it on the loop (signal handlers are). Returns at once."""
        self._stop_requested = True
        self._room.set()

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
        # Handlers end in bursts (one broker acknowledgement completes many of them): their
        # successors start once per burst, when this loop iteration's callbacks have run.
        if not self._restart_pending:
            self._restart_pending = True
            asyncio.get_running_loop().call_soon(self._start_after_done)

    def _start_after_done(self) -> None:
        self._restart_pending = False
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

    async def _drain(self) -> None:
        # Backlog messages never started: they stay uncommitted and are read again later.
        self._backlog.clear()
        timeout = min(self.drain_timeout, self.shutdown_drain_timeout)
        await self._finish_or_cancel(list(self._running), timeout)
        await self._commit(asynchronous=False)
