"""Asking any Kafka cluster for metadata without hanging and without a librdkafka log flood.

Every command that talks to Kafka probes first, so that a missing broker is reported at once
with the address that was tried.

Example::

    metadata = probe_metadata("127.0.0.1:9092", timeout=5)
    print(metadata.cluster_id, len(metadata.brokers))
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from dspex.errors import BrokerAuthenticationError, BrokerUnavailableError

__all__ = ["probe_metadata", "quiet_client_config"]


class _DebugLog:
    """librdkafka's log sink: its connection chatter goes to Python logging at DEBUG, never stderr."""

    _log = logging.getLogger("dspex.kafka.librdkafka")

    def log(self, level: int, msg: str, *args: Any) -> None:
        self._log.debug(msg, *args)


def quiet_client_config() -> dict[str, Any]:
    """librdkafka settings that keep a client from flooding stderr when a broker is away."""
    return {"logger": _DebugLog(), "log.connection.close": False}


def probe_metadata(
    bootstrap: str, *, config: Mapping[str, Any] | None = None, timeout: float = 8.0
) -> ClusterMetadata:
    """Ask ``bootstrap`` for cluster metadata; ``BrokerUnavailableError`` if no broker answers in time.

    A plain TCP connect comes first, so an address where nothing listens fails at once
    instead of after the whole timeout; refused SASL credentials fail within about a second too.
    """
    refused = _tcp_refusal(bootstrap, timeout=min(2.0, timeout))
    if refused:
        raise BrokerUnavailableError(bootstrap, detail=refused)
    errors: list[KafkaError] = []
    settings: dict[str, Any] = {**quiet_client_config(), **(config or {}), "bootstrap.servers": bootstrap}
    settings["error_cb"] = errors.append
    admin = AdminClient(settings)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb: an authentication failure is final, say so at once
            _raise_if_refused(bootstrap, errors, exc, settings)
            if time.monotonic() >= deadline:
                raise BrokerUnavailableError(bootstrap, detail=_kafka_error_text(exc, timeout)) from exc


def _raise_if_refused(
    bootstrap: str, errors: list[KafkaError], exc: KafkaException, settings: Mapping[str, Any]
) -> None:
    refusals = [error for error in errors if error.code() == KafkaError._AUTHENTICATION]
    if refusals:
        raise BrokerAuthenticationError(bootstrap, detail=_refusal_detail(refusals[0], settings)) from exc


def _refusal_detail(refusal: KafkaError, settings: Mapping[str, Any]) -> str:
    """The broker's words, what we sent (never the password) and the settings to change."""
    sent = ", ".join(
        f"{name} {settings[key]!r}"
        for name, key in (("protocol", "security.protocol"), ("mechanism", "sasl.mechanism"),
                          ("user", "sasl.username"))
        if settings.get(key)
    )  # fmt: skip
    return (
        f"{refusal.str()} (we sent {sent or 'no SASL settings'}). The broker is up: fix the credentials, "
        "not the address. Set DSPEX_KAFKA_SASL_USERNAME and DSPEX_KAFKA_SASL_PASSWORD (and "
        "DSPEX_KAFKA_SASL_MECHANISM / DSPEX_KAFKA_SECURITY_PROTOCOL if the listener expects others) in "
        "the environment of the worker or client, or KafkaSettings(sasl_username=..., "
        "sasl_password=...) from Python"
    )


def _kafka_error_text(exc: KafkaException, timeout: float) -> str:
    error: Any = exc.args[0] if exc.args else exc
    text = error.str() if isinstance(error, KafkaError) else str(exc)
    return f"no metadata within {timeout:g} s: {text}"


def _tcp_refusal(bootstrap: str, *, timeout: float) -> str:
    """Empty when some bootstrap address accepts a TCP connection, else why none did."""
    reasons = []
    for host, port in _split_bootstrap(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return ""
        except OSError as exc:
            reasons.append(exc.strerror or str(exc))
    return "; ".join(dict.fromkeys(reasons)) or "no address to connect to"


def _split_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    addresses = []
    for item in bootstrap.split(","):
        address = item.strip().rsplit("://", 1)[-1]
        host, _, port = address.rpartition(":")
        if host and port.isdigit():
            addresses.append((host.strip("[]"), int(port)))
    return addresses
