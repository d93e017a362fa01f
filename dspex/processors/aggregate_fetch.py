"""The aggregator's consumer, fetching without faust's 1.5 s long poll.

aiokafka keeps one fetch request per broker in flight, and a request only names partitions with
nothing buffered. All scores of a job go to one partition (key job_id), so while that partition's
records are buffered the next request names only the idle ones (the other score partitions, the
jobs topic), and the broker holds it for ``fetch_max_wait_ms`` waiting for data that does not come.
The busy partition cannot be fetched again until that answer returns. faust hard-codes 1,500 ms
there; measured in ``bench/pipeline_throughput.py``'s stack, batches of scores then arrived up to
1.46 s apart while the scores topic kept growing, and a 6,000-task job completed up to 1.5 s after
its last score. With 100 ms (what our librdkafka consumers use) the stall is bounded by that.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as FaustAIOKafkaConsumer

__all__ = ["FETCH_MAX_WAIT_MS", "use_prompt_fetch"]

FETCH_MAX_WAIT_MS = 100


class _PromptFetchThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its Fetcher; faust offers no setting
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _PromptFetchConsumer(FaustAIOKafkaConsumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _PromptFetchThread(self, loop=self.loop, beacon=self.beacon)


def use_prompt_fetch(app: faust.App) -> None:
    """Make ``app``'s stream consumer long-poll at most :data:`FETCH_MAX_WAIT_MS` (before it starts)."""
    # faust declares it a ClassVar; this app's transport is the only one that should change
    app.transport.Consumer = _PromptFetchConsumer  # type: ignore[misc]
