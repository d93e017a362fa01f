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
import signal
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from dspex.errors import ConfigurationError
from dspex.streams.consumer_base import (
    CommitHook,
    Decoder,
    Handler,
    RuntimeStats,
    message_size,
)
from dspex.streams.consumer_dispatch import DispatchingRuntime
from dspex.streams.consumer_options import ConsumerOptions
from dspex.streams.flow import TopicPartitionKey

__all__ = [
    "CommitHook",
    "ConsumerOptions",
    "ConsumerRuntime",
    "Decoder",
    "Handler",
    "RuntimeStats",
    "message_size",
]


class ConsumerRuntime(DispatchingRuntime):
    """One consumer-group member running a handler coroutine per message (see module docs)."""

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

    async def _shut_down(self) -> None:
        for task in list(self._running):
            task.cancel()
        if self._consumer is not None:
            await self._kafka(self._close)
        if self._kafka_thread is not None:
            self._kafka_thread.shutdown(wait=False)
        if self._finished is not None:
            self._finished.set()
