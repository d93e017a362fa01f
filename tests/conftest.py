"""Fixtures that reach a real Kafka broker, and names that keep tests apart.

Where the session's broker comes from, first match wins:

1. ``DSPEX_KAFKA_BOOTSTRAP`` (it must answer: a dead address fails the tests that need it);
2. testcontainers' Kafka module, where a Docker engine answers a ping within 2 s;
3. the project's own dev broker (``dspex.dev.DevBroker``) on a free port in a temporary data dir.

With ``CI=true`` a test that needs a broker and cannot get one fails; it never skips.
Every test gets its own topic prefix and group ids (``topic_prefix``, ``unique_group``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from mlflow_tools import mlflow_server  # noqa: F401  (a session fixture: the tests' MLflow server)

from dspex.dev import DevBroker, probe_metadata
from dspex.errors import BrokerUnavailableError, DevBrokerError

ENV_BOOTSTRAP = "DSPEX_KAFKA_BOOTSTRAP"
# Kafka 3.9 in Confluent's image: the line testcontainers' KRaft set-up is known to work with.
ENV_IMAGE = "DSPEX_TEST_KAFKA_IMAGE"
DEFAULT_IMAGE = "confluentinc/cp-kafka:7.9.0"
# The design's dev timing and sizes, as the Confluent image's environment variables.
CONTAINER_ENV = {
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    "KAFKA_MIN_INSYNC_REPLICAS": "1",
    "KAFKA_MESSAGE_MAX_BYTES": str(16 * 1024 * 1024),
    "KAFKA_REPLICA_FETCH_MAX_BYTES": str(16 * 1024 * 1024),
}
# Several brokers share the machine during the suite, but memory is not what is short (24 GiB): the
# session broker's old generation held 264 of its 314 MB at 384m by a sixth of the suite, since
# every test adds topics to it. Kafka's own default is 1g.
TEST_HEAP = "768m"


@pytest.fixture(autouse=True)
def _memory_only_response_cache() -> Iterator[None]:
    """Each test starts with an empty, memory-only ``dspex.cache`` (as DSPy's own suite does): no test
    sees another's cached LM responses or function results, and none writes to ~/.cache/dspex."""
    import dspex

    original = dspex.__dict__.get("cache")
    dspex.configure_cache(enable_disk_cache=False)
    yield
    if original is None:
        dspex.__dict__.pop("cache", None)
    else:
        dspex.cache = original


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def no_broker(reason: str) -> NoReturn:
    """Fail under CI (a test that needs Kafka must never pass by skipping there), else skip."""
    if in_ci():
        pytest.fail(f"CI=true and no Kafka broker could be had: {reason}", pytrace=False)
    pytest.skip(f"no Kafka broker: {reason}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get(ENV_BOOTSTRAP):
        return f"kafka: {ENV_BOOTSTRAP}={os.environ[ENV_BOOTSTRAP]}"
    return "kafka: testcontainers if Docker answers, else a dev broker started for the session"


# --------------------------------------------------------------------------------------------
# Where a broker can come from
# --------------------------------------------------------------------------------------------


def _docker_answers(timeout: float = 2.0) -> bool:
    """A real ping of the Docker engine's API, not just a socket file that exists."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        sock = _docker_socket(host, timeout)
        if sock is None:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def _docker_socket(host: str, timeout: float) -> socket.socket | None:
    if host.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(host.removeprefix("unix://"))
        except OSError:
            sock.close()  # no engine behind the path: the caller never sees this socket to close it
            raise
        return sock
    if host.startswith("tcp://"):
        address, _, port = host.removeprefix("tcp://").rpartition(":")
        return socket.create_connection((address, int(port)), timeout=timeout)
    return None


def _from_env(bootstrap: str) -> str:
    problem = ""
    try:
        probe_metadata(bootstrap, timeout=10.0)
    except BrokerUnavailableError as exc:
        problem = str(exc)  # failed outside the handler: no chained traceback in the report
    if problem:
        pytest.fail(f"{ENV_BOOTSTRAP}={bootstrap} is set but {problem}", pytrace=False)
    return bootstrap


def _start(broker: DevBroker) -> None:
    problem = ""
    try:
        broker.start()
    except DevBrokerError as exc:
        problem = str(exc)
    if problem:
        no_broker(problem)


def _from_testcontainers() -> Iterator[str]:
    # Imported only where a Docker engine answers: nothing else needs it.
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(os.environ.get(ENV_IMAGE, DEFAULT_IMAGE)).with_kraft()
    for key, value in CONTAINER_ENV.items():
        container.with_env(key, value)
    container.start(timeout=180)
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()


def _from_dev_broker(data_dir: Path) -> Iterator[str]:
    broker = DevBroker(port=free_port(), data_dir=data_dir, heap=TEST_HEAP, startup_timeout=120.0)
    _start(broker)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a real Kafka broker for the whole session."""
    configured = os.environ.get(ENV_BOOTSTRAP, "").strip()
    if configured:
        yield _from_env(configured)
    elif _docker_answers():
        yield from _from_testcontainers()
    else:
        yield from _from_dev_broker(tmp_path_factory.mktemp("kafka-session"))


@pytest.fixture
def broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., DevBroker]]:
    """Start extra brokers of a test's own; each is a ``DevBroker`` (``.bootstrap``, ``.stop()``,
    ``.start()`` again on the same data dir) and is stopped when the test ends.

    Example::

        def test_restart(broker_factory):
            broker = broker_factory()
            broker.stop()
            broker.start()
    """
    started: list[DevBroker] = []

    def start_broker(**options: Any) -> DevBroker:
        options.setdefault("heap", TEST_HEAP)
        options.setdefault("startup_timeout", 120.0)
        data_dir = options.pop("data_dir", None) or tmp_path_factory.mktemp("kafka-extra")
        broker = DevBroker(port=options.pop("port", None) or free_port(), data_dir=data_dir, **options)
        started.append(broker)
        _start(broker)
        return broker

    yield start_broker
    for broker in started:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses, e.g. ``t1a2b3c4d.``."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def unique_group(topic_prefix: str) -> Callable[[str], str]:
    """Make consumer group ids no other test uses: ``unique_group("scorer")``."""

    def make(name: str = "group") -> str:
        return f"{topic_prefix}{name}.{uuid.uuid4().hex[:6]}"

    return make
