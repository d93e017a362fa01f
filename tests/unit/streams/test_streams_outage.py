"""A Kafka outage in the log: one warning, a summary at most every 10 s, one line when it is back."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError as RawKafkaError

from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.outage import (
    AiokafkaConnectionFilter,
    KafkaReachability,
    QuietClientLog,
    is_connection_error,
    is_connection_text,
)

REFUSED = (
    "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: "
    "Connection refused (after 0ms in state CONNECT)"
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reachability(clock: Clock) -> KafkaReachability:
    return KafkaReachability(summary_every_s=10.0, log=logging.getLogger("test.outage"), clock=clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "test.outage"]


def test_a_minute_of_refused_connects_is_one_warning_six_summaries_and_one_line_back(
    reachability: KafkaReachability, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for tick in range(600):  # 10 errors a second for 60 s, as a worker's clients produce them
        clock.now = tick / 10
        reachability.unreachable("consumer", REFUSED)
    assert reachability.down
    clock.now = 61.0
    reachability.reachable()
    reachability.reachable()

    logged = lines(caplog)
    assert logged[0].startswith("Kafka is unreachable (consumer: ")
    summaries = [line for line in logged if line.startswith("Kafka still unreachable after")]
    assert len(summaries) == 5  # at 10, 20, 30, 40 and 50 s: never two within 10 s
    assert "100 connection errors in the last 10 s" in summaries[0]
    assert logged[-1] == "Kafka answers again after 61 s (600 connection errors while it was unreachable)"
    assert len(logged) == 7
    assert not reachability.down


def test_a_sign_of_life_without_an_outage_logs_nothing(
    reachability: KafkaReachability, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reachability.reachable()
    assert lines(caplog) == []


def test_a_second_outage_is_reported_again(
    reachability: KafkaReachability, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    reachability.unreachable("producer", REFUSED)
    reachability.reachable()
    clock.now = 100.0
    reachability.unreachable("producer", REFUSED)
    assert [line.split(" (")[0] for line in lines(caplog)] == [
        "Kafka is unreachable",
        "Kafka answers again after 0 s",
        "Kafka is unreachable",
    ]


@pytest.mark.parametrize(
    "text",
    [
        REFUSED,
        "GroupCoordinator: 127.0.0.1:9: Disconnected (after 12ms in state UP)",
        "1/1 brokers are down",
        "Unable connect to node with id 1: [Errno 111] Connect call failed ('127.0.0.1', 9)",
        "Failed fetch messages from 1: NodeNotReadyError: Attempt to send a request to node not ready",
        "Unable to update metadata from [1]",
    ],
)
def test_connection_failures_are_recognised(text: str) -> None:
    assert is_connection_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "Topic authorization failed for dspex.tasks",
        "Message size too large",
        "[thrd:main]: Partition t(abc)[3]: new leader-1 not found in cache",
    ],
)
def test_other_faults_are_not_folded_away(text: str) -> None:
    assert not is_connection_text(text)


def test_error_codes_are_recognised() -> None:
    assert is_connection_error(RawKafkaError(RawKafkaError._TRANSPORT, "x"))
    assert is_connection_error(RawKafkaError(RawKafkaError._ALL_BROKERS_DOWN, "x"))
    assert not is_connection_error(RawKafkaError(RawKafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"))


def test_the_client_log_folds_connection_lines_and_passes_the_rest(
    reachability: KafkaReachability, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = logging.getLogger("test.librdkafka.consumer")
    quiet = QuietClientLog(client, reachability)
    for _ in range(50):
        quiet.log(logging.ERROR, "%s [%s] %s", "FAIL", "dspex#consumer-1", REFUSED)
        quiet.error(RawKafkaError(RawKafkaError._TRANSPORT, REFUSED))
    quiet.log(logging.WARNING, "%s [%s] %s", "AUTH", "dspex#consumer-1", "Topic authorization failed")
    quiet.error(RawKafkaError(RawKafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"))

    client_lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == client.name]
    loud = [text for level, text in client_lines if level >= logging.WARNING]
    assert len(loud) == 2 and "authorization" in loud[0].lower()
    assert sum(level == logging.DEBUG for level, _ in client_lines) == 100  # still there, at DEBUG
    assert lines(caplog) == [f"Kafka is unreachable (consumer: {REFUSED}); further connection errors are "
                             "summarised every 10 s until it answers again"]  # fmt: skip


def test_every_librdkafka_client_reports_through_the_quiet_log() -> None:
    config = client_config(KafkaSettings(), logging.getLogger("dspex.streams.librdkafka.test"))
    assert isinstance(config["logger"], QuietClientLog)
    assert config["error_cb"] == config["logger"].error
    assert config["log.connection.close"] is False


def test_aiokafka_connection_records_are_filtered_into_the_report(
    reachability: KafkaReachability, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    folded = AiokafkaConnectionFilter(reachability)
    refused = logging.LogRecord(
        "aiokafka.client", logging.ERROR, __file__, 1, "Unable connect to node with id %s: %s", (1, "x"), None
    )
    other = logging.LogRecord(
        "aiokafka.client", logging.ERROR, __file__, 1, "Topic authorization failed", (), None
    )
    assert folded.filter(refused) is False
    assert folded.filter(other) is True
    assert reachability.down


def test_a_restarting_broker_s_retried_states_never_start_an_outage_report(
    reachability: KafkaReachability, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    folded = AiokafkaConnectionFilter(reachability)
    for text in (
        "Heartbeat session expired - marking coordinator dead",
        "OffsetCommit failed for group g due to a coordinator error (NotCoordinatorForGroupError)",
        "Got error produce response on topic-partition TopicPartition(topic='w', partition=0), retrying. "
        "Error: <class 'aiokafka.errors.NotLeaderForPartitionError'>",
    ):
        record = logging.LogRecord(
            "aiokafka.consumer.group_coordinator", logging.ERROR, __file__, 1, text, (), None
        )
        assert folded.filter(record) is False
    assert not reachability.down and lines(caplog) == []
    reachability.unreachable("consumer", REFUSED)
    clock.now = 10.0
    reachability.transient("lag", "No leaders found")
    reachability.unreachable("consumer", REFUSED)
    assert "2 connection errors in the last 10 s" in lines(caplog)[-1]
