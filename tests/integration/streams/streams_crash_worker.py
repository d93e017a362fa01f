"""A consumer process for the crash test: one output record per input, through the runtime.

    python streams_crash_worker.py BOOTSTRAP GROUP INPUT OUTPUT DLQ

Runs until SIGTERM (drains, commits, exits 0) or until it is killed; prints its counters as
JSON on the way out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import sys

from confluent_kafka import Message

from dspex.streams.config import KafkaSettings
from dspex.streams.consumer import ConsumerOptions, ConsumerRuntime
from dspex.streams.producer import AsyncProducer


async def main(bootstrap: str, group: str, source: str, sink: str, dlq: str) -> None:
    settings = KafkaSettings(bootstrap_servers=bootstrap, client_id="crash-worker")
    rng = random.Random()
    async with AsyncProducer(settings) as producer:

        async def handle(message: Message, value: bytes) -> None:
            await asyncio.sleep(rng.uniform(0, 0.010))
            await producer.produce(sink, value, key=message.key())

        runtime = ConsumerRuntime(
            settings,
            ConsumerOptions(
                group_id=group,
                topics=[source],
                dlq_topic=dlq,
                max_in_flight=64,
                fast_groups=True,
            ),
            handler=handle,
            producer=producer,
        )
        runtime.install_signal_handlers()
        await runtime.run()
    print(json.dumps(dataclasses.asdict(runtime.stats)), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
