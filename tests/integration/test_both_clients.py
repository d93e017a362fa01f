"""Both Kafka clients of dspex against one real broker.

confluent-kafka (librdkafka) writes the processors' traffic and faust-streaming (aiokafka)
runs the aggregator, so keyed data must land on the same partition whichever of them wrote
it: confluent producers use ``partitioner=murmur2_random``, the Java client's and aiokafka's
hash. Values of several MB (demos with passages) must get through as well.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dspex.dev import quiet_client_config

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

PARTITIONS = 8
BIG = 16 * 1024 * 1024

# A faust-streaming app: an agent reads topic A and forwards each record, key unchanged, to
# topic B through faust's own producer (aiokafka's partitioner picks the partition).
FORWARDER = textwrap.dedent(
    """
    import os

    import faust

    app = faust.App(
        os.environ["FORWARDER_APP_ID"],
        broker="kafka://" + os.environ["FORWARDER_BOOTSTRAP"],
        datadir=os.environ["FORWARDER_DATADIR"],
        web_enabled=False,
        store="memory://",
        topic_replication_factor=1,
        topic_partitions=8,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    source = app.topic(os.environ["FORWARDER_SOURCE"], key_type=bytes, value_type=bytes)
    sink = app.topic(os.environ["FORWARDER_SINK"], key_type=bytes, value_type=bytes)


    @app.agent(source)
    async def forward(stream):
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value)


    if __name__ == "__main__":
        app.main()
    """
)


def create_topics(bootstrap: str, names: list[str], config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, **quiet_client_config()})
    new = [NewTopic(name, PARTITIONS, 1, config=config or {}) for name in names]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)


def producer(bootstrap: str, **extra: object) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "compression.type": "zstd",
            **quiet_client_config(),
            **extra,
        }
    )


def consumer(bootstrap: str, topic: str, **extra: object) -> Consumer:
    client = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}.reader.{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            **quiet_client_config(),
            **extra,
        }
    )
    client.subscribe([topic])
    return client


def produce_keyed(bootstrap: str, topic: str, keys: list[bytes]) -> dict[bytes | None, int | None]:
    """Write one record per key; returns the partition each landed on, from the delivery reports."""
    landed: dict[bytes | None, int | None] = {}
    errors: list[object] = []

    def delivered(error: object, message: Message) -> None:
        if error is not None:
            errors.append(error)
        landed[message.key()] = message.partition()

    client = producer(bootstrap)
    for key in keys:
        client.produce(topic, key=key, value=b"v:" + key, on_delivery=delivered)
    assert client.flush(30) == 0
    assert errors == []
    return landed


def read_keyed(
    bootstrap: str, topic: str, expected: int, deadline_s: float, writer: subprocess.Popen[bytes]
) -> dict[bytes | None, int | None]:
    """Read until ``expected`` distinct keys arrived, the deadline passed or the writer died."""
    client = consumer(bootstrap, topic)
    seen: dict[bytes | None, int | None] = {}
    deadline = time.monotonic() + deadline_s
    try:
        while len(seen) < expected and time.monotonic() < deadline and writer.poll() is None:
            message = client.poll(0.5)
            if message is not None and message.error() is None:
                seen[message.key()] = message.partition()
    finally:
        client.close()
    return seen


@pytest.fixture
def forwarder(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """Topics A and B, and a faust worker process forwarding A to B; stopped with SIGTERM."""
    source, sink = f"{topic_prefix}a", f"{topic_prefix}b"
    create_topics(kafka_bootstrap, [source, sink])
    script = tmp_path / "forwarder.py"
    script.write_text(FORWARDER, encoding="utf-8")
    env = {
        **os.environ,
        "FORWARDER_APP_ID": f"{topic_prefix}forwarder",
        "FORWARDER_BOOTSTRAP": kafka_bootstrap,
        "FORWARDER_DATADIR": str(tmp_path / "faust-data"),
        "FORWARDER_SOURCE": source,
        "FORWARDER_SINK": sink,
    }
    log = (tmp_path / "forwarder.log").open("wb")
    command = [sys.executable, str(script), "worker", "--loglevel", "warn", "--without-web"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield source, sink, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def stop_worker(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, as a process manager stops a faust worker; its exit code, None if it hung."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.slow
def test_keys_land_on_the_same_partition_whichever_client_wrote_them(
    kafka_bootstrap: str, forwarder: tuple[str, str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    source, sink, process = forwarder
    keys = [f"job-{index}".encode() for index in range(200)]

    by_confluent = produce_keyed(kafka_bootstrap, source, keys)
    by_faust = read_keyed(kafka_bootstrap, sink, len(keys), deadline_s=120, writer=process)

    log = (tmp_path / "forwarder.log").read_text(errors="replace")
    assert process.poll() is None, f"the faust worker exited:\n{log[-3000:]}"
    assert set(by_faust) == set(keys), f"faust forwarded {len(by_faust)} of {len(keys)}:\n{log[-3000:]}"
    all_partitions = list(range(PARTITIONS))
    by_aiokafka = {key: DefaultPartitioner()(key, all_partitions, all_partitions) for key in keys}
    assert by_confluent == by_faust == by_aiokafka
    assert len(set(by_confluent.values())) == PARTITIONS  # the keys spread: not trivially equal
    assert stop_worker(process) == 0, log[-3000:]


def test_a_3_mb_value_round_trips(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}big"
    create_topics(kafka_bootstrap, [topic], config={"max.message.bytes": str(BIG)})
    value = os.urandom(3 * 1024 * 1024)  # random bytes: zstd cannot shrink it under the limits
    client = producer(kafka_bootstrap, **{"message.max.bytes": BIG})
    client.produce(topic, key=b"big", value=value, headers=[("job_id", b"j1")])
    assert client.flush(30) == 0

    reader = consumer(kafka_bootstrap, topic)
    try:
        deadline = time.monotonic() + 60
        message = None
        while message is None and time.monotonic() < deadline:
            message = reader.poll(0.5)
        assert message is not None and message.error() is None
        assert message.value() == value
        assert message.headers() == [("job_id", b"j1")]
    finally:
        reader.close()
