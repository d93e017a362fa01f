"""How dspex reaches Kafka: one frozen settings object, translated for each client library.

Every client dspex creates (confluent-kafka producers, consumers and admin clients, and the
aiokafka clients under faust-streaming) is configured from the same :class:`KafkaSettings`, so
SASL and SSL settings reach all of them. Environment variables are read only by
:meth:`KafkaSettings.from_env` (through pydantic-settings, ``DSPEX_KAFKA_`` prefix), which the
CLI and :class:`dspex.Client` call at their edge.

    >>> settings = KafkaSettings(bootstrap_servers="127.0.0.1:9092")
    >>> settings.confluent()["bootstrap.servers"]
    '127.0.0.1:9092'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from dspex.errors import ConfigurationError
from dspex.streams.outage import QuietClientLog

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "ENV_PREFIX",
    "FAST_GROUP_TIMING",
    "KafkaSettings",
    "SaslMechanism",
    "SecurityProtocol",
    "client_config",
    "consumer_defaults",
    "env_values",
    "settings_error",
]

logger = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
ENV_PREFIX = "DSPEX_KAFKA_"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]

# Tests and the dev broker: a killed member's partitions move in seconds, not Kafka's 45 s.
FAST_GROUP_TIMING: dict[str, str] = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}

_HOST_PORT = re.compile(r"^[^\s:,]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$")
# the one variable not named after its field: DSPEX_KAFKA_BOOTSTRAP
_VARIABLES = {"bootstrap_servers": "BOOTSTRAP"}
_PASSWORD_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}


DEFAULT_CLIENT_ID = "dspex"


class KafkaSettings(BaseModel):
    """Connection and security settings shared by every Kafka client of one process.

    ``extra`` holds further librdkafka properties (``"socket.keepalive.enable": "true"``);
    they reach confluent-kafka clients only, since aiokafka names its options differently.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    client_id: str = DEFAULT_CLIENT_ID
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise settings_error(exc, lambda field: f"KafkaSettings.{field}") from None

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        _check_bootstrap(self.bootstrap_servers)
        if self.security_protocol.startswith("SASL"):
            _check_sasl(self)
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> KafkaSettings:
        """Settings from ``DSPEX_KAFKA_*`` variables in ``env``; ``overrides`` win over them.

        ``DSPEX_KAFKA_BOOTSTRAP`` names the brokers; the other variables are the field names in
        upper case (``DSPEX_KAFKA_SASL_PASSWORD``, ``DSPEX_KAFKA_SSL_CAFILE``, ...). A value of
        the wrong type is a :class:`ConfigurationError` naming the variable and what it expects.
        """
        given = {key: value for key, value in overrides.items() if value is not None}
        # ``extra`` (librdkafka properties) is set in Python only, never from one variable
        read = env_values(cls, ENV_PREFIX, env, skip={"extra", *given}, variables=_VARIABLES)
        return cls(**{**read, **given})

    def confluent(self) -> dict[str, Any]:
        """librdkafka properties for confluent-kafka's Producer, Consumer and AdminClient."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.lower(),
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_cafile,
            "ssl.certificate.location": self.ssl_certfile,
            "ssl.key.location": self.ssl_keyfile,
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        config.update(self.extra)
        return config

    def for_worker(self, kind: str, worker_id: str) -> KafkaSettings:
        """These settings with ``client.id`` ``dspex-<kind>-<worker id>`` (the kind once), so
        the brokers' logs and quotas tell workers apart; a client id set explicitly stays."""
        if self.client_id != DEFAULT_CLIENT_ID:
            return self
        name = worker_id if worker_id.startswith(f"{kind}-") else f"{kind}-{worker_id}"
        return self.model_copy(update={"client_id": f"{DEFAULT_CLIENT_ID}-{name}"})

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (and so for faust-streaming's broker options)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol.endswith("SSL"):
            kwargs["ssl_context"] = self._ssl_context()
        return kwargs

    def _ssl_context(self) -> Any:
        # Imported here so that reading settings never needs aiokafka installed.
        from aiokafka.helpers import create_ssl_context

        return create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )


def consumer_defaults(fast_groups: bool) -> dict[str, str]:
    """Group timing for consumers: the design's short timing for tests and dev, else Kafka's."""
    return dict(FAST_GROUP_TIMING) if fast_groups else {}


def client_config(
    settings: KafkaSettings, log: logging.Logger | logging.LoggerAdapter[Any], **overrides: Any
) -> dict[str, Any]:
    """confluent-kafka configuration whose librdkafka logs and errors go to ``log``.

    Without a ``logger`` librdkafka prints to stderr, which floods a terminal with connection
    retries when no broker answers; through Python logging they obey the application's levels.
    Connection failures are folded into one process-wide outage report
    (:mod:`dspex.streams.outage`): a warning, a summary every 10 s, a line when Kafka is back.
    """
    quiet = QuietClientLog(log)
    config = settings.confluent()
    config["logger"] = quiet
    config["error_cb"] = quiet.error
    # an idle connection the broker closes is no news (librdkafka logs each one by default)
    config["log.connection.close"] = False
    config.update(overrides)
    return config


def _check_bootstrap(bootstrap: str) -> None:
    entries = [entry.strip() for entry in bootstrap.split(",")]
    bad = [entry for entry in entries if not _HOST_PORT.match(entry)]
    if not bootstrap.strip() or bad:
        raise ConfigurationError(
            f"bootstrap servers {bootstrap!r} must be HOST:PORT[,HOST:PORT...] (bad entries: {bad})"
        )


def _check_sasl(settings: KafkaSettings) -> None:
    if settings.sasl_mechanism is None:
        raise ConfigurationError(
            f"security_protocol {settings.security_protocol} needs a sasl_mechanism "
            f"(one of {sorted(_PASSWORD_MECHANISMS)}, OAUTHBEARER, GSSAPI)"
        )
    needs_password = settings.sasl_mechanism in _PASSWORD_MECHANISMS
    if needs_password and (settings.sasl_username is None or settings.sasl_password is None):
        raise ConfigurationError(
            f"SASL mechanism {settings.sasl_mechanism} needs sasl_username and sasl_password"
        )


class _EnvReader(BaseSettings):
    """Fields read from ``found`` (values keyed by field name) rather than from ``os.environ``.

    :func:`env_values` builds one subclass per call with the fields it reads; pydantic-settings'
    environment source then converts the strings (lists and dicts as JSON).
    """

    model_config = SettingsConfigDict(extra="ignore")
    found: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_MappingEnvSource(settings_cls, cls.found),)


class _MappingEnvSource(EnvSettingsSource):
    """The environment source over a given mapping rather than ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._env


def env_values(
    model: type[BaseModel],
    prefix: str,
    env: Mapping[str, str],
    *,
    skip: Collection[str] = (),
    variables: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The fields of ``model`` that ``PREFIX<FIELD>`` variables in ``env`` set, converted and checked.

    pydantic-settings reads them (names in any case; empty values count as unset; lists and
    dicts as JSON); a value of the wrong type is a :class:`ConfigurationError` naming the
    variable and what it expects. Fields no variable sets are left out, so a caller can put
    command-line values above these and its defaults below. Fields in ``skip`` are not read
    (a value given another way wins, or the field is never set from one variable);
    ``variables`` names the variable of a field not named after it (``{"bootstrap_servers":
    "BOOTSTRAP"}``, without the prefix).
    """
    names = {field: (prefix + field).upper() for field in model.model_fields if field not in skip}
    names.update(
        {field: (prefix + name).upper() for field, name in (variables or {}).items() if field in names}
    )
    by_variable = {key.upper(): value for key, value in env.items() if value != ""}
    found = {field: by_variable[name] for field, name in names.items() if name in by_variable}
    fields: dict[str, Any] = {
        field: (model.model_fields[field].annotation, model.model_fields[field]) for field in names
    }
    reader = create_model(f"{model.__name__}Env", __base__=_EnvReader, **fields)
    reader.found = found
    try:
        read = reader()
    except ValidationError as exc:
        raise settings_error(exc, lambda field: names.get(field, prefix + field.upper())) from None
    return {name: getattr(read, name) for name in read.model_fields_set}


def settings_error(exc: ValidationError, label: Callable[[str], str]) -> ConfigurationError:
    """One line for the first bad value: where it came from (``label(field)``), what it should be.

    A :class:`ConfigurationError` raised by a validator (pydantic wraps ValueErrors) comes back
    as it was; secrets (fields named ``*password*``) are never echoed. Every settings object of
    dspex reports a bad value through this.
    """
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigurationError):
        return cause
    field = str(error["loc"][0]) if error["loc"] else "settings"
    shown = "" if "password" in field else f" (got {error.get('input')!r})"
    return ConfigurationError(f"{label(field)}: {error['msg']}{shown}")
