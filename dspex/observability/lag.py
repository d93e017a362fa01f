"""Consumer-group lag and membership from the admin API, exported as Prometheus gauges.

Lag is committed versus end offsets (:meth:`dspex.streams.admin.KafkaAdmin.group_lag`), read by
one process for every group of the pipeline, so it shows while no member of a group is alive:
exactly when it matters. The aggregator process runs a :class:`GroupLagExporter` in a background
thread; ``dspex status`` reads the same numbers on demand.

    >>> exporter = GroupLagExporter(settings, pipeline_groups("dspex."), interval=5.0)  # doctest: +SKIP
    >>> exporter.start()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from dspex.errors import DspexError
from dspex.observability import metrics
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings, client_config
from dspex.streams.outage import REACHABILITY, is_connection_text, is_transient_text
from dspex.streams.topics import TopicRegistry

__all__ = ["GroupLagExporter", "pipeline_groups"]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("dspex.streams.librdkafka.admin")
_DESCRIBE_TIMEOUT_S = 5.0
# librdkafka's own deadline for the describe request: far beyond the wait above, so the request
# never expires while its coordinator lookup is still pending (a use-after-free in librdkafka,
# PR 5397 upstream, that crashed the aggregator with a SIGSEGV). We stop waiting sooner instead.
_DESCRIBE_REQUEST_TIMEOUT_S = 60.0


def pipeline_groups(prefix: str) -> dict[str, list[str]]:
    """The pipeline's consumer groups and the topics each consumes."""
    registry = TopicRegistry(prefix)
    return {
        f"{prefix}predict": [registry.name("tasks")],
        f"{prefix}score": [registry.name("predictions")],
        f"{prefix}aggregate": [registry.name("scores"), registry.name("jobs")],
        f"{prefix}intake": [registry.name("submit")],
    }


class GroupLagExporter:
    """Every ``interval`` s: lag per (group, topic) and live members per group, into the gauges.

    ``on_poll`` runs after each round, on the same thread (the aggregator syncs its counters there).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        groups: Mapping[str, Sequence[str]],
        *,
        interval: float = 5.0,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.groups = {group: list(topics) for group, topics in groups.items()}
        self.interval = interval
        self.rounds = 0
        self._on_poll = on_poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admin: KafkaAdmin | None = None
        self._client: Any = None
        metrics.prepare_aggregator(self.groups.items())

    def start(self) -> GroupLagExporter:
        """Poll in a daemon thread (the first round at once)."""
        self._thread = threading.Thread(target=self._run, name="dspex-group-lag", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return  # still inside a call: its admin must stay open (the thread is a daemon)
            self._thread = None
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def poll_once(self) -> None:
        """One round over every group; a group that cannot be read is logged and skipped."""
        for group, topics in self.groups.items():
            try:
                self._export_lag(group, topics)
                metrics.group_members(group, self._members(group))
            except (DspexError, KafkaException, TimeoutError) as exc:
                # TimeoutError: a describe request unanswered while the broker restarts; this thread
                # must live on (it died of one once, and the lag metrics stopped with it)
                if isinstance(exc, TimeoutError) or is_transient_text(str(exc)) or REACHABILITY.down:
                    REACHABILITY.transient("lag", f"group {group}: {exc!r}")  # a broker away or restarting
                elif is_connection_text(str(exc)):
                    REACHABILITY.unreachable("lag", str(exc))
                else:
                    logger.warning("could not read the lag of group %s: %s", group, exc)
        self.rounds += 1
        if self._on_poll is not None:
            self._on_poll()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval)

    def _export_lag(self, group: str, topics: list[str]) -> None:
        if self._admin is None:
            self._admin = KafkaAdmin(self.settings)
        per_topic = {topic: 0 for topic in topics}
        per_topic.update(self._admin.group_lag(group, topics).by_topic())
        for topic, lag in per_topic.items():
            metrics.group_lag(group, topic, lag)

    def _members(self, group: str) -> int:
        if self._client is None:
            self._client = AdminClient(client_config(self.settings, _librdkafka_logger))
        futures = self._client.describe_consumer_groups([group], request_timeout=_DESCRIBE_REQUEST_TIMEOUT_S)
        description = futures[group].result(timeout=_DESCRIBE_TIMEOUT_S + 1)
        return len(description.members or [])
