"""Topic registry validation and client settings: refused before anything touches a broker."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from dspex.errors import ConfigurationError
from dspex.streams.config import KafkaSettings, consumer_defaults
from dspex.streams.topics import LARGE_MESSAGE_BYTES, ROLES, TopicRegistry


def test_registry_names_every_role_under_the_prefix() -> None:
    registry = TopicRegistry("acme.dspex.")
    assert [spec.name for spec in registry.specs()] == [f"acme.dspex.{role}" for role in ROLES]
    assert registry.name("optimizer-state") == "acme.dspex.optimizer-state"
    assert registry.role_of("acme.dspex.dlq") == "dlq"
    assert registry.role_of("other.dlq") is None


def test_registry_shapes_follow_the_design() -> None:
    registry = TopicRegistry("p.", partitions={"tasks": 32, "scores": 12}, replication_factor=3)
    assert registry.spec("tasks").partitions == 32
    assert registry.spec("scores").partitions == 12
    assert {spec.replication_factor for spec in registry.specs()} == {3}
    compacted = {spec.role for spec in registry.specs() if spec.compacted}
    assert compacted == {
        "candidates", "status", "workers", "optimizer-state", "blobs", "lm-responses", "lm-batches",
    }  # fmt: skip
    assert "delete" in registry.spec("workers").config["cleanup.policy"]  # short retention
    assert "delete" in registry.spec("blobs").config["cleanup.policy"]  # values of old jobs go
    for role in ("tasks", "predictions", "scores", "candidates", "dlq", "jobs", "blobs"):
        assert registry.spec(role).config["max.message.bytes"] == str(LARGE_MESSAGE_BYTES)


@pytest.mark.parametrize("prefix", ["has space.", "ümlaut.", "slash/", "star*"])
def test_illegal_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="may only contain"):
        TopicRegistry(prefix)


def test_prefix_too_long_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at most 234"):
        TopicRegistry("x" * 235)
    TopicRegistry("x" * 234)  # exactly fits "optimizer-state" (15) within 249


@pytest.mark.parametrize(
    ("partitions", "message"),
    [
        ({"tasks": 4}, "at least 8 partitions"),
        ({"scores": 0}, "partition count >= 1"),
        ({"jobs": -2}, "partition count >= 1"),
        ({"nope": 3}, "unknown topic roles"),
    ],
)
def test_bad_partition_counts_are_refused(partitions: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TopicRegistry("ok.", partitions=partitions)


def test_replication_factor_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="replication factor"):
        TopicRegistry("ok.", replication_factor=0)


def test_sasl_ssl_settings_reach_both_client_libraries() -> None:
    settings = KafkaSettings(
        bootstrap_servers="k1:9093,k2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("s3cret"),
        extra={"socket.keepalive.enable": "true"},
    )
    confluent = settings.confluent()
    assert confluent["security.protocol"] == "sasl_ssl"
    assert confluent["sasl.mechanism"] == "SCRAM-SHA-512"
    assert confluent["sasl.username"] == "svc"
    assert confluent["sasl.password"] == "s3cret"
    assert confluent["socket.keepalive.enable"] == "true"
    aiokafka = settings.aiokafka()
    assert aiokafka["security_protocol"] == "SASL_SSL"
    assert aiokafka["sasl_plain_password"] == "s3cret"
    assert aiokafka["ssl_context"] is not None
    assert "s3cret" not in repr(settings)


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="needs a sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ConfigurationError, match="needs sasl_username and sasl_password"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u")


@pytest.mark.parametrize("bootstrap", ["", "localhost", "a:1,,b:2", "host:port"])
def test_malformed_bootstrap_is_refused(bootstrap: str) -> None:
    with pytest.raises(ConfigurationError, match="bootstrap servers"):
        KafkaSettings(bootstrap_servers=bootstrap)


def test_settings_from_environment_and_overrides() -> None:
    env = {
        "DSPEX_KAFKA_BOOTSTRAP": "k:9092",
        "DSPEX_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DSPEX_KAFKA_SASL_MECHANISM": "PLAIN",
        "DSPEX_KAFKA_SASL_USERNAME": "u",
        "DSPEX_KAFKA_SASL_PASSWORD": "p",
    }
    settings = KafkaSettings.from_env(env, bootstrap_servers="other:9092")
    assert settings.bootstrap_servers == "other:9092"
    assert settings.sasl_password is not None and settings.sasl_password.get_secret_value() == "p"


def test_group_timing() -> None:
    assert consumer_defaults(True) == {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}
    assert consumer_defaults(False) == {}
