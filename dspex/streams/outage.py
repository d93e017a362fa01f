"""Kafka outages in a worker's log: one warning, a summary every 10 s, one line when it is back.

While no broker answers, every Kafka client of a process (librdkafka's consumers, producers,
readers and admin clients, and aiokafka's under faust) reports every refused connect, each twice
(a log line and an error callback): about a hundred lines a second per worker, which bury
everything else. :class:`KafkaReachability` folds them: the first connection error of an outage
is logged as a warning, later ones are counted and summarised at most once per
``summary_every_s``, and the first sign of a working broker (a delivered record, a fetched
message, a successful commit) ends the outage with one line. Connection errors still reach the
clients' own loggers at DEBUG.

    >>> reachability = KafkaReachability(summary_every_s=10.0)
    >>> reachability.unreachable("producer", "Connection refused")  # one WARNING
    >>> reachability.unreachable("consumer", "Connection refused")  # counted, not logged
    >>> reachability.reachable()  # one INFO: back after ... s
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError as RawKafkaError

__all__ = [
    "REACHABILITY",
    "SUMMARY_EVERY_S",
    "AiokafkaConnectionFilter",
    "KafkaReachability",
    "QuietClientLog",
    "is_connection_error",
    "is_connection_text",
    "is_transient_text",
    "quiet_aiokafka_loggers",
]

logger = logging.getLogger("dspex.streams.kafka")

SUMMARY_EVERY_S = 10.0

# What a refused, dropped, timed-out or unresolvable connection says, in librdkafka's and aiokafka's
# words. Anything else (authorization, sizes, configuration) is logged as it comes.
_CONNECTION_TEXT = re.compile(
    r"Connect to .* failed|Connection refused|Connect call failed|Disconnected|"
    r"all broker connections are down|brokers are down|Failed to resolve|Broker transport failure|"
    r"Connection setup timed out|Receive failed|Send failed|Connection reset|timed out|"
    r"NodeNotReadyError|KafkaConnectionError|RequestTimedOutError|Unable connect to node|"
    r"Unable to update metadata|Unable to request metadata|Coordinator not available|"
    r"CoordinatorNotAvailable|Waiting for coordinator",
    re.IGNORECASE,
)
# What a broker that is (re)starting, or a group whose coordinator moved, says for a moment: the
# clients retry these themselves. They never start an outage report, and are counted in one.
_TRANSIENT_TEXT = re.compile(
    r"NotCoordinator|coordinator dead|Heartbeat failed|Heartbeat session expired|GroupLoadInProgress|"
    r"NotLeaderForPartition|NotLeaderOrFollower|LeaderNotAvailable|No leaders found|"
    r"Failed to query partition leaders|OffsetCommit failed|Unknown member|rebalance in progress|"
    r"load in progress",
    re.IGNORECASE,
)
_CONNECTION_CODES = frozenset(
    {
        RawKafkaError._TRANSPORT,
        RawKafkaError._ALL_BROKERS_DOWN,
        RawKafkaError._RESOLVE,
        RawKafkaError._TIMED_OUT,
        RawKafkaError._WAIT_COORD,
        RawKafkaError.COORDINATOR_NOT_AVAILABLE,
        RawKafkaError.NOT_COORDINATOR,
        RawKafkaError.REQUEST_TIMED_OUT,
        RawKafkaError.NETWORK_EXCEPTION,
    }
)


def is_connection_text(text: str) -> bool:
    """Whether a client's log line or error text describes a connection failure."""
    return _CONNECTION_TEXT.search(text) is not None


def is_transient_text(text: str) -> bool:
    """Whether a client's log line is a broker-side state the client retries (leader, coordinator)."""
    return _TRANSIENT_TEXT.search(text) is not None


def is_connection_error(error: Any) -> bool:
    """Whether a confluent-kafka KafkaError is a connection failure (not a real fault of ours)."""
    code = getattr(error, "code", None)
    if callable(code) and code() in _CONNECTION_CODES:
        return True
    return is_connection_text(str(error))


class KafkaReachability:
    """One process's view of whether Kafka answers, and the few log lines that say so."""

    def __init__(
        self,
        *,
        summary_every_s: float = SUMMARY_EVERY_S,
        log: logging.Logger = logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.summary_every_s = summary_every_s
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_line = 0.0
        self._since_line = 0
        self._total = 0

    @property
    def down(self) -> bool:
        """Whether an outage is going on (a connection error came after the last sign of life)."""
        return self._down_since is not None

    def unreachable(self, source: str, detail: str) -> None:
        """A client could not reach a broker: logged when the outage starts, else counted."""
        with self._lock:
            now = self._clock()
            if self._down_since is None:
                self._down_since, self._last_line, self._since_line, self._total = now, now, 0, 1
                self._log.warning(
                    "Kafka is unreachable (%s: %s); further connection errors are summarised every "
                    "%.0f s until it answers again",
                    source,
                    _short(detail),
                    self.summary_every_s,
                )
                return
            self._since_line += 1
            self._total += 1
            if now - self._last_line >= self.summary_every_s:
                self._log.warning(
                    "Kafka still unreachable after %.0f s: %d connection errors in the last %.0f s "
                    "(latest from %s: %s)",
                    now - self._down_since,
                    self._since_line,
                    now - self._last_line,
                    source,
                    _short(detail),
                )
                self._last_line, self._since_line = now, 0

    def transient(self, source: str, detail: str) -> None:
        """A retried broker-side state (see :func:`is_transient_text`): counted during an outage,
        else only logged at DEBUG; it never starts an outage report."""
        self._log.debug("transient Kafka state (%s): %s", source, detail)
        if self._down_since is not None:
            with self._lock:
                self._since_line += 1
                self._total += 1

    def reachable(self) -> None:
        """Something worked (a record delivered, a message fetched, a commit done): the outage ends."""
        if self._down_since is None:  # the common case: no lock on every delivery
            return
        with self._lock:
            if self._down_since is None:
                return
            self._log.info(
                "Kafka answers again after %.0f s (%d connection errors while it was unreachable)",
                self._clock() - self._down_since,
                self._total,
            )
            self._down_since = None


REACHABILITY = KafkaReachability()
"""The process's one instance: every client of a worker reports to it."""


class QuietClientLog:
    """librdkafka's log sink and error callback for one client: connection errors go to
    :data:`REACHABILITY` (and to ``log`` at DEBUG), everything else to ``log`` as it comes."""

    def __init__(
        self, log: logging.Logger | logging.LoggerAdapter[Any], reachability: KafkaReachability | None = None
    ) -> None:
        self._log = log
        self._reachability = reachability or REACHABILITY
        self._name = log.name if isinstance(log, logging.Logger) else log.logger.name

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        """confluent-kafka calls it as ``log(level, "%s [%s] %s", facility, client name, text)``."""
        text = str(args[-1]) if args else str(msg)
        if level >= logging.WARNING and is_connection_text(text):
            self._reachability.unreachable(self._source(), text)
            level = logging.DEBUG
        elif level >= logging.WARNING and is_transient_text(text):
            self._reachability.transient(self._source(), text)
            level = logging.DEBUG
        self._log.log(level, msg, *args, **kwargs)

    def error(self, error: Any) -> None:
        """librdkafka's ``error_cb``."""
        if is_connection_error(error):
            self._reachability.unreachable(self._source(), str(error))
            self._log.debug("kafka client error: %s", error)
        else:
            self._log.warning("kafka client error: %s", error)

    def _source(self) -> str:
        return self._name.rsplit(".", 1)[-1]


# aiokafka's loggers that report every refused connect (the aggregator, under faust)
_AIOKAFKA_LOGGERS = (
    "aiokafka",  # aiokafka/client.py logs as "aiokafka"
    "aiokafka.admin.client",
    "aiokafka.consumer.consumer",
    "aiokafka.conn",
    "aiokafka.cluster",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.consumer.fetcher",
    "aiokafka.producer.sender",
    "aiokafka.producer.producer",
)


class AiokafkaConnectionFilter(logging.Filter):
    """Turns aiokafka's connection-failure records into :class:`KafkaReachability` counts."""

    def __init__(self, reachability: KafkaReachability | None = None) -> None:
        super().__init__()
        self._reachability = reachability or REACHABILITY

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return True
        text = record.getMessage()
        if is_transient_text(text):
            self._reachability.transient("aiokafka", text)
            return False
        if record.levelno < logging.WARNING or not is_connection_text(text):
            return True
        self._reachability.unreachable("aiokafka", text)
        return False


def quiet_aiokafka_loggers(reachability: KafkaReachability | None = None) -> None:
    """Fold aiokafka's connection failures into ``reachability`` (idempotent)."""
    for name in _AIOKAFKA_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, AiokafkaConnectionFilter) for f in log.filters):
            log.addFilter(AiokafkaConnectionFilter(reachability))


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
