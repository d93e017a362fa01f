"""The aggregator process's observability: /metrics, group lag, and job gauges from its statuses.

:class:`AggregatorMetrics` is what the faust aggregator starts beside its app:

- a :class:`~dspex.observability.server.MetricsServer` (kind ``aggregate``, registered for file_sd);
- a :class:`~dspex.observability.lag.GroupLagExporter` thread for every pipeline group;
- :meth:`AggregatorMetrics.status_sent`, called with each JobStatus the aggregator writes, which keeps
  the per-job gauges of running jobs and counts jobs reaching a terminal state; a job whose status
  stops coming (its partition moved to another instance) loses its series after ``stale_after_s``;
- the aggregator's own counters (scores counted, duplicate, ...) mirrored into Prometheus counters.

    >>> observed = AggregatorMetrics(settings, prefix="dspex.", worker_id="aggregate-1",
    ...                              stats=aggregator.stats).start()  # doctest: +SKIP
    >>> observed.status_sent(encoded_job_status)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from dspex.observability import metrics
from dspex.observability.lag import GroupLagExporter, pipeline_groups
from dspex.observability.server import DEFAULT_METRICS_HOST, DEFAULT_TARGETS_DIR, MetricsServer
from dspex.streams.config import KafkaSettings

__all__ = ["AggregatorMetrics"]

logger = logging.getLogger(__name__)

_TERMINAL = frozenset(metrics.JOB_FINAL_STATES)
_ENDED_REMEMBERED = 100_000  # job ids, about 10 MB: far more than finish within the late-usage window


class AggregatorMetrics:
    """Everything the aggregator exports besides faust's own work (see module docs)."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        prefix: str,
        worker_id: str,
        stats: Mapping[str, int] | None = None,
        host: str = DEFAULT_METRICS_HOST,
        port: int | None = None,
        targets_dir: str | Path | None = DEFAULT_TARGETS_DIR,
        serve: bool = True,
        lag_interval: float = 5.0,
        stale_after_s: float = 20.0,
    ) -> None:
        """``stats``: the aggregator's counters by outcome (read, never written, from the lag thread)."""
        self.server = None
        if serve:
            self.server = MetricsServer(
                kind="aggregate",
                worker_id=worker_id,
                host=host,
                port=port,
                targets_dir=targets_dir,
                labels={"prefix": prefix},
            )
        groups = pipeline_groups(prefix)
        self.lag = GroupLagExporter(settings, groups, interval=lag_interval, on_poll=self.sync)
        self.stale_after_s = stale_after_s
        self._stats = stats
        self._exported: dict[str, int] = {}
        self._seen: dict[str, float] = {}  # running job -> monotonic time of its last status
        # Jobs already counted as finished: a terminal status is sent again when usage arrives
        # late (attempts charged after the end, see dspex.processors.aggregate_state), and the job
        # must count once. Oldest forgotten first.
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def start(self) -> AggregatorMetrics:
        """Serve /metrics (ConfigurationError for a port in use) and start the lag thread."""
        if self.server is not None:
            self.server.start()
        self.lag.start()
        return self

    def stop(self) -> None:
        """Stop the lag thread and the server (safe to call twice)."""
        self.lag.stop()
        if self.server is not None:
            self.server.stop()

    def status_sent(self, value: bytes) -> None:
        """Account one JobStatus the aggregator wrote (encoded JSON, as on the topic)."""
        try:
            status = json.loads(value)
            job_id, state = str(status["job_id"]), str(status["state"])
        except (ValueError, KeyError, TypeError) as exc:
            logger.debug("status not understood by the metrics: %s", exc)
            return
        if state in _TERMINAL:
            with self._lock:
                self._seen.pop(job_id, None)
                first = self._remember_ended(job_id)
            metrics.job_ended(job_id, state if first else None)
            return
        with self._lock:
            self._seen[job_id] = time.monotonic()
        usage = status.get("usage") or {}
        done, total = int(status.get("done") or 0), int(status.get("total_tasks") or 0)
        metrics.job_progress(job_id, done=done, total=total, cost_usd=float(usage.get("cost_usd") or 0.0))

    def _remember_ended(self, job_id: str) -> bool:
        """Whether this is the job's first terminal status here (the caller holds the lock)."""
        if job_id in self._ended:
            return False
        self._ended[job_id] = None
        if len(self._ended) > _ENDED_REMEMBERED:
            self._ended.popitem(last=False)
        return True

    def sync(self) -> None:
        """Mirror the aggregator's counters and drop the series of jobs no longer reported here."""
        self._sync_stats()
        cutoff = time.monotonic() - self.stale_after_s
        with self._lock:
            stale = [job for job, seen in self._seen.items() if seen < cutoff]
            for job in stale:
                del self._seen[job]
        for job in stale:
            metrics.job_ended(job, None)

    def _sync_stats(self) -> None:
        if self._stats is None:
            return
        try:
            current = dict(self._stats)
        except RuntimeError:  # the loop thread added a key while we copied: next round
            return
        for outcome in metrics.SCORE_OUTCOMES:
            grown = current.get(outcome, 0) - self._exported.get(outcome, 0)
            if grown > 0:
                metrics.aggregator_scores(outcome, grown)
                self._exported[outcome] = current.get(outcome, 0)
