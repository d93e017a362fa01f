"""Default worker ids stay unique where hostname and pid repeat; each worker names its Kafka client."""

from __future__ import annotations

import os
import socket

from dspex.processors.common import default_worker_id
from dspex.streams.config import KafkaSettings
from dspex.streams.identity import process_id


def test_the_id_is_stable_in_a_process_and_new_in_a_forked_child() -> None:
    assert process_id() == process_id()
    assert process_id().startswith(f"{socket.gethostname()}-{os.getpid()}-")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, process_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        childs = pipe.read()
    assert childs.startswith(f"{socket.gethostname()}-{child}-") and childs != process_id()


def test_the_worker_id_starts_with_its_kind() -> None:
    assert default_worker_id("predict") == f"predict-{process_id()}"


def test_each_worker_names_its_kafka_client_unless_one_was_configured() -> None:
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9092")
    assert settings.client_id == "dspex"
    named = settings.for_worker("score", "score-h-1-abc123")
    assert named.confluent()["client.id"] == "dspex-score-h-1-abc123"
    assert settings.for_worker("score", "w7").aiokafka()["client_id"] == "dspex-score-w7"
    mine = KafkaSettings(bootstrap_servers="127.0.0.1:9092", client_id="billing")
    assert mine.for_worker("score", "w7").client_id == "billing"
