"""``KafkaSettings.from_env``: DSPEX_KAFKA_* through pydantic-settings, one-line errors."""

from __future__ import annotations

import pytest

from dspex.errors import ConfigurationError
from dspex.streams.config import DEFAULT_BOOTSTRAP, KafkaSettings


def test_every_field_has_its_variable() -> None:
    env = {
        "DSPEX_KAFKA_BOOTSTRAP": "k1:9093,k2:9093",
        "DSPEX_KAFKA_CLIENT_ID": "svc",
        "DSPEX_KAFKA_SECURITY_PROTOCOL": "SSL",
        "DSPEX_KAFKA_SSL_CAFILE": "/ca.pem",
        "DSPEX_KAFKA_SSL_CERTFILE": "/cert.pem",
        "DSPEX_KAFKA_SSL_KEYFILE": "/key.pem",
        "UNRELATED": "ignored",
    }
    settings = KafkaSettings.from_env(env)
    assert type(settings) is KafkaSettings  # equal to one built by hand, not a subclass
    assert settings == KafkaSettings(
        bootstrap_servers="k1:9093,k2:9093",
        client_id="svc",
        security_protocol="SSL",
        ssl_cafile="/ca.pem",
        ssl_certfile="/cert.pem",
        ssl_keyfile="/key.pem",
    )


def test_empty_variables_and_none_overrides_mean_the_defaults() -> None:
    settings = KafkaSettings.from_env({"DSPEX_KAFKA_BOOTSTRAP": ""}, bootstrap_servers=None)
    assert settings == KafkaSettings()
    assert settings.bootstrap_servers == DEFAULT_BOOTSTRAP


def test_the_given_mapping_is_read_not_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DSPEX_KAFKA_CLIENT_ID", "from-process")
    assert KafkaSettings.from_env({}).client_id == "dspex"


def test_extra_is_never_read_from_one_variable() -> None:
    assert KafkaSettings.from_env({"DSPEX_KAFKA_EXTRA": "not json"}).extra == {}


def test_a_bad_variable_is_one_line_naming_it_and_the_expected_values() -> None:
    with pytest.raises(ConfigurationError) as caught:
        KafkaSettings.from_env({"DSPEX_KAFKA_SECURITY_PROTOCOL": "TELEPATHY"})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("DSPEX_KAFKA_SECURITY_PROTOCOL: ")
    assert "'SASL_SSL'" in message and "TELEPATHY" in message


def test_a_bad_override_names_the_field_not_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"^KafkaSettings\.sasl_mechanism: "):
        KafkaSettings.from_env({"DSPEX_KAFKA_SASL_MECHANISM": "PLAIN"}, sasl_mechanism="MAGIC")


def test_a_wrong_type_given_in_python_is_one_line_naming_the_field() -> None:
    with pytest.raises(ConfigurationError) as caught:
        KafkaSettings(client_id=["not", "a", "string"])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("KafkaSettings.client_id: Input should be a valid string")


def test_a_secret_is_never_echoed_in_an_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        KafkaSettings(sasl_password=12345)
    assert "12345" not in str(caught.value)
    assert str(caught.value).startswith("KafkaSettings.sasl_password: ")


def test_only_the_prefixed_variable_names_the_brokers() -> None:
    env = {"BOOTSTRAP_SERVERS": "other:1", "DSPEX_KAFKA_BOOTSTRAP_SERVERS": "other:2"}
    assert KafkaSettings.from_env(env).bootstrap_servers == DEFAULT_BOOTSTRAP
    assert KafkaSettings.from_env({"dspex_kafka_bootstrap": "k:9093"}).bootstrap_servers == "k:9093"


def test_a_variable_for_a_value_given_in_python_is_not_read() -> None:
    settings = KafkaSettings.from_env({"DSPEX_KAFKA_SECURITY_PROTOCOL": "TELEPATHY"}, security_protocol="SSL")
    assert settings.security_protocol == "SSL"


def test_a_bad_bootstrap_variable_is_one_line_naming_it() -> None:
    with pytest.raises(ConfigurationError) as caught:
        KafkaSettings.from_env({"DSPEX_KAFKA_BOOTSTRAP": "no port"})
    assert "\n" not in str(caught.value) and "'no port'" in str(caught.value)
