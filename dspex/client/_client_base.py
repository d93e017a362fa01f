"""The connection a :class:`dspex.Client` holds: settings, topics, admin client and producer.

One layer of :class:`dspex.Client`; :mod:`dspex.client._client` lists them all.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from dspex._sync import run_sync
from dspex.client._publish import Positions
from dspex.client._submit import Policy, Submission
from dspex.dev.probe import probe_metadata
from dspex.errors import ConfigurationError
from dspex.primitives import Module
from dspex.streams.admin import KafkaAdmin
from dspex.streams.blobs import BlobSettings, BlobWriter
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

__all__ = ["CONNECT_TIMEOUT_S", "ClientBase", "Program", "Submitted"]

Program = Module | Mapping[str, Any]

# Below the 10 s in which an unreachable broker must be reported.
CONNECT_TIMEOUT_S = 8.0


@dataclass(frozen=True)
class Submitted:
    """A job this client submitted: what it needs to turn the job's scores into results."""

    submission: Submission
    where: Positions
    submitted_at: float


class ClientBase:
    """A client's connection to the cluster and its lifecycle (see :class:`dspex.Client`)."""

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        prefix: str = "dspex.",
        kafka: KafkaSettings | None = None,
        allow_modules: Collection[str] | None = None,
        allow_api_bases: Collection[str] | None = None,
        allow_key_envs: Collection[str] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        blobs: BlobSettings | None = None,
    ) -> None:
        """``kafka`` carries security settings (SASL/SSL); ``bootstrap_servers`` alone is enough
        for a plain broker. Without ``kafka``, the ``DSPEX_KAFKA_*`` environment variables the
        workers read fill in the rest (``DSPEX_KAFKA_BOOTSTRAP`` when ``bootstrap_servers`` is None,
        then 127.0.0.1:9092; ``DSPEX_KAFKA_SASL_*``, ``DSPEX_KAFKA_SSL_*``). The ``allow_*`` lists
        refuse at submit time what workers started with the same lists would refuse (None: no
        check). ``blobs``: when example values travel through the blobs topic and how large they may
        be (:class:`~dspex.streams.blobs.BlobSettings`; default: over 256 KiB, at most 64 MiB)."""
        self.settings = _settings(bootstrap_servers, kafka)
        self.registry = TopicRegistry(prefix)
        self.policy = Policy(allow_modules, allow_api_bases, allow_key_envs)
        self.connect_timeout = connect_timeout
        self._admin = KafkaAdmin(self.settings, timeout=connect_timeout)
        self._producer: AsyncProducer | None = None
        self._connected = False
        self._topics_ready = False
        self._submitted: dict[str, Submitted] = {}
        self.blob_settings = blobs or BlobSettings()
        self._blobs = BlobWriter(self.blob_settings)

    def __repr__(self) -> str:
        return f"Client({self.settings.bootstrap_servers!r}, prefix={self.registry.prefix!r})"

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def close(self) -> None:
        """Flush what is still queued and release the connections."""
        run_sync(self.aclose())

    async def aclose(self) -> None:
        """Async form of :meth:`close`."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.aclose()
        await asyncio.to_thread(self._admin.close)  # its committed-offset readers

    # -- internals ---------------------------------------------------------------------------------

    async def _aready(self, *, create_topics: bool) -> None:
        if not self._connected:
            # A TCP connect first: an address where nothing listens fails at once, not after the timeout.
            await asyncio.to_thread(
                probe_metadata,
                self.settings.bootstrap_servers,
                config=self.settings.confluent(),
                timeout=self.connect_timeout,
            )
            self._connected = True
        if create_topics and not self._topics_ready:
            await asyncio.to_thread(self._admin.ensure_topics, self.registry)
            self._topics_ready = True

    def _get_producer(self) -> AsyncProducer:
        if self._producer is None:
            self._producer = AsyncProducer(self.settings)
        return self._producer

    async def _aproducer(self) -> AsyncProducer:
        """:meth:`_get_producer`, connected and knowing the topics the first time (a job's first
        records would otherwise wait for that)."""
        if self._producer is None:
            producer = self._get_producer()
            await producer.warm_up(self.connect_timeout)
            return producer
        return self._producer


def _settings(bootstrap_servers: str | None, kafka: KafkaSettings | None) -> KafkaSettings:
    if kafka is None:
        # As the workers do: DSPEX_KAFKA_* (bootstrap, SASL, SSL) fill what the caller did not give;
        # a wrong value is a one-line ConfigurationError naming the variable (from_env).
        return KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap_servers)
    if bootstrap_servers is not None and bootstrap_servers != kafka.bootstrap_servers:
        raise ConfigurationError(
            f"bootstrap_servers={bootstrap_servers!r} disagrees with kafka.bootstrap_servers="
            f"{kafka.bootstrap_servers!r}; pass one of them"
        )
    return kafka
