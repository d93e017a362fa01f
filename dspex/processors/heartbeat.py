"""A worker saying it is alive: a WorkerHeartbeat to the workers topic every couple of seconds.

The workers topic is compacted by worker id with a short retention, so it holds each worker's
latest heartbeat; ``dspex status`` shows a worker as alive while its ``sent_at`` is fresh. A worker
stopping in order sends a last heartbeat marked ``final``: one whose heartbeats stop without it
died, and the aggregator reports what it had not reported (:mod:`dspex.processors.aggregate_deaths`).

    >>> async with HeartbeatPublisher(producer, "dspex.workers", worker.heartbeat, 2.0):  # doctest: +SKIP
    ...     await runtime.run()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dspex.errors import DspexError
from dspex.schemas.workers import WorkerHeartbeat
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import to_record

__all__ = ["FINAL_SEND_S", "HEARTBEAT_INTERVAL_S", "HeartbeatPublisher"]

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 2.0  # every worker kind's, the aggregator's included
FINAL_SEND_S = 1.0
"""How long a stopping worker waits for its final heartbeat's acknowledgement (within the stop
deadline; one still queued then goes out with the producer's flush, if at all)."""


class HeartbeatPublisher:
    """Publishes ``snapshot()`` to ``topic`` at once and then every ``interval`` seconds."""

    def __init__(
        self,
        producer: AsyncProducer,
        topic: str,
        snapshot: Callable[[], WorkerHeartbeat],
        interval: float = 2.0,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.snapshot = snapshot
        self.interval = interval
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HeartbeatPublisher:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start publishing in the background."""
        self._task = asyncio.create_task(self._beat(), name=f"dspex-heartbeat-{self.topic}")

    async def stop(self) -> None:
        """Stop publishing (a heartbeat being sent is abandoned) and send a final one."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        heartbeat = self.snapshot().model_copy(update={"final": True})
        try:
            sending = self.producer.produce_record(self.topic, to_record(heartbeat, role="workers"))
            await asyncio.wait_for(sending, FINAL_SEND_S)
        except (DspexError, TimeoutError) as exc:
            # Its readers will take the worker for dead once it is silent: say why, once.
            logger.info("final heartbeat of %s not acknowledged: %r", heartbeat.worker_id, exc)

    async def send_now(self) -> None:
        """Publish one heartbeat now (e.g. when a circuit breaker changed), between the regular ones."""
        await self._send_one()

    async def _beat(self) -> None:
        while True:
            await self._send_one()
            await asyncio.sleep(self.interval)

    async def _send_one(self) -> None:
        heartbeat = self.snapshot()
        try:
            await self.producer.produce_record(self.topic, to_record(heartbeat, role="workers"))
            self.sent += 1
        except DspexError as exc:
            # A missed heartbeat is not worth stopping the worker for: the next one may get through.
            logger.warning("heartbeat of %s not sent: %s", heartbeat.worker_id, exc)
