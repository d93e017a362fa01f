"""``dspex.Client`` reads the DSPEX_KAFKA_* environment the way workers do, unless given settings."""

from __future__ import annotations

import os

import pytest

from dspex.client import Client
from dspex.errors import ConfigurationError
from dspex.streams.config import DEFAULT_BOOTSTRAP, ENV_PREFIX, KafkaSettings

SASL_ENV = {
    "DSPEX_KAFKA_BOOTSTRAP": "broker-a.internal:9094",
    "DSPEX_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "DSPEX_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "DSPEX_KAFKA_SASL_USERNAME": "dspex-client",
    "DSPEX_KAFKA_SASL_PASSWORD": "s3cret-from-env",
    "DSPEX_KAFKA_CLIENT_ID": "dspex-notebook",
}


@pytest.fixture
def kafka_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No DSPEX_KAFKA_* variable from the test run leaks in; the test sets its own."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


def test_without_arguments_the_client_uses_the_environment(kafka_env: pytest.MonkeyPatch) -> None:
    for name, value in SASL_ENV.items():
        kafka_env.setenv(name, value)
    settings = Client().settings
    assert settings.bootstrap_servers == "broker-a.internal:9094"
    assert (settings.security_protocol, settings.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert settings.sasl_username == "dspex-client"
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == "s3cret-from-env"
    assert settings.client_id == "dspex-notebook"
    assert settings.confluent()["sasl.username"] == "dspex-client"  # what librdkafka is given
    assert "s3cret-from-env" not in repr(Client())  # the secret never shows in a repr


def test_an_explicit_bootstrap_wins_and_security_still_comes_from_the_environment(
    kafka_env: pytest.MonkeyPatch,
) -> None:
    for name, value in SASL_ENV.items():
        kafka_env.setenv(name, value)
    settings = Client("broker-b.internal:9095").settings
    assert settings.bootstrap_servers == "broker-b.internal:9095"
    assert settings.security_protocol == "SASL_PLAINTEXT"
    assert settings.sasl_username == "dspex-client"


def test_given_settings_ignore_the_environment(kafka_env: pytest.MonkeyPatch) -> None:
    for name, value in SASL_ENV.items():
        kafka_env.setenv(name, value)
    given = KafkaSettings(bootstrap_servers="127.0.0.1:19092")
    assert Client(kafka=given).settings == given


def test_no_environment_means_the_local_default(kafka_env: pytest.MonkeyPatch) -> None:
    settings = Client().settings
    assert settings.bootstrap_servers == DEFAULT_BOOTSTRAP
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.sasl_mechanism is None


def test_an_invalid_environment_value_is_a_configuration_error(kafka_env: pytest.MonkeyPatch) -> None:
    kafka_env.setenv("DSPEX_KAFKA_SECURITY_PROTOCOL", "TELEPATHY")
    with pytest.raises(ConfigurationError, match="DSPEX_KAFKA_"):
        Client()
