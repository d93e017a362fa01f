"""The aggregator: a faust-streaming app turning scores into job statuses.

It reads the scores topic (ScoreRecord, key job_id) and the jobs topic (EvalJob for totals and
limits, Cancel, PurgeJob), keeps exact de-duplicated per-candidate aggregates in changelog-backed tables
(the state and its rules are in :mod:`dspex.processors.aggregate_state`), and writes JobStatus to
the status topic (key job_id): at once when a job completes, fails or is cancelled, and every
``status_interval`` seconds while it runs. jobs and scores have the same partition count, so the
instance that owns a job's partition of both is the one writer of its status.

faust traps handled here (see DESIGN.md section 3):

- one agent, concurrency 1, over both topics, in batches (``take_events``): a batch rewrites each
  table key once, and faust acks the batch's offsets only after the body has handled it;
- the changelog partition of every write is the job's partition, set explicitly (faust would take
  it from whichever event is "current", which in a batch spanning partitions is wrong);
- faust's committed offsets are not trusted (on a restart it can drop records fetched while it
  seeks, and its producer flush can return early): the ``positions`` table records each source
  partition's next offset once the batch's writes are on the broker, records are applied in
  offset order from there, and a partition read past it is sought back
  (:mod:`dspex.processors.aggregate_resync`); the de-duplication bitmaps live in the same
  changelog-backed values as the sums, so records read again are duplicates, not counted twice;
- the timer sends nothing while faust rebalances or recovers tables, and only for jobs whose
  partition this instance actively owns;
- our topics are created by :func:`dspex.streams.admin.KafkaAdmin.ensure_topics`; faust creates
  only its changelog topics, with the scores topic's partition count.

It also follows the whole workers topic: a predictor whose heartbeats stop without a final one
(kill -9) is dead, and what it had not reported shows in its jobs' ``usage_unreported``
(:mod:`dspex.processors.aggregate_deaths`).

Run it with ``dspex worker aggregate`` or ``python -m dspex.processors.aggregator --bootstrap
HOST:PORT --prefix dspex. --data-dir DIR``; from Python, :func:`run_aggregator` (blocking).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT

from dspex._gc import tune_gc_for_worker
from dspex._loop import set_worker_loop
from dspex.errors import ConfigurationError, KafkaError, SchemaError
from dspex.observability.aggregator import AggregatorMetrics
from dspex.processors.aggregate_deaths import DeathWatch, death_key, record_unreported, restate_unreported
from dspex.processors.aggregate_fetch import use_prompt_fetch
from dspex.processors.aggregate_folders import StateFolder, claim_state_folder, remove_stale_folders
from dspex.processors.aggregate_resync import PartitionResync, SourcePositions
from dspex.processors.aggregate_spans import BatchSpans, batch_spans, start_aggregator_tracing
from dspex.processors.aggregate_state import (
    AggregateBatch,
    BatchResult,
    JobMeta,
    StatusClock,
    build_status,
    invalid_job_id,
    job_chunk_keys,
    job_totals,
    open_state,
    status_fingerprint,
)
from dspex.processors.aggregator_options import AggregatorOptions, parse_options
from dspex.processors.common import dspex_version
from dspex.processors.heartbeat import HEARTBEAT_INTERVAL_S
from dspex.processors.stopping import StopGuard
from dspex.schemas import (
    Cancel,
    DeadLetter,
    ErrorInfo,
    EvalJob,
    JobMessage,
    PurgeJob,
    ScoreRecord,
    UsageRecord,
    UsageReport,
    WorkerHeartbeat,
    decode,
    encode,
    headers_for,
    is_usage_report,
    key_for,
)
from dspex.schemas.base import utc_now
from dspex.schemas.results import SCORE_SOURCE_DLQ
from dspex.schemas.serde import schema_error_reason
from dspex.schemas.tasks import task_id_for
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.identity import process_id
from dspex.streams.outage import REACHABILITY, is_connection_text, quiet_aiokafka_loggers
from dspex.streams.reader import CompactedReader
from dspex.streams.topics import TopicRegistry

__all__ = [
    "BATCH_MAX",
    "BATCH_WITHIN_S",
    "HEARTBEAT_S",
    "Aggregator",
    "build_aggregator",
    "main",
    "run_aggregator",
]

logger = logging.getLogger(__name__)

BATCH_MAX = 500
# A batch closes at BATCH_MAX events or this long after its first: the last scores of a job wait
# at most this before they are counted and its final status goes out.
BATCH_WITHIN_S = 0.1
HEARTBEAT_S = 5.0
"""A running job whose status did not change is still re-sent this often."""


class Aggregator:
    """The faust app, its topics and tables, and the handlers that connect them."""

    def __init__(
        self,
        settings: KafkaSettings,
        options: AggregatorOptions,
        *,
        partitions: int,
        replication_factor: int = 1,
    ) -> None:
        """Build the app; nothing touches the broker until it runs (see :func:`build_aggregator`).

        ``partitions`` and ``replication_factor`` are what the broker has (not options).
        """
        self.registry = TopicRegistry(options.prefix)
        self.worker_id = options.worker_id or f"aggregate-{process_id()}"
        settings = self.settings = settings.for_worker("aggregate", self.worker_id)
        self.deaths = DeathWatch(options.dead_worker_after)  # heard from the workers topic
        self.stats: Counter[str] = Counter()
        self.on_status: Callable[[bytes], None] | None = None  # sees every status sent (metrics)
        self.metrics_url: str | None = None  # in the heartbeat, when /metrics is served
        self._started_at = utc_now()
        self._clock = StatusClock()
        self._sent: dict[str, tuple[str, float]] = {}  # job -> (fingerprint, monotonic time sent)
        # Statuses are enqueued one at a time, so a running status the timer built before a job
        # ended can never land on the topic after that job's terminal status.
        self._send_lock = asyncio.Lock()
        self.state_folder = _own_state_folder(options.data_dir, self.worker_id)
        app_options = _app_options(settings, options, self.worker_id, partitions, replication_factor)
        self.app = faust.App(**app_options)
        use_prompt_fetch(self.app)
        self.sources = self.app.topic(
            self.registry.name("scores"),
            self.registry.name("jobs"),
            key_type=bytes,
            value_type=bytes,
            partitions=partitions,
        )
        self.status_topic = self.app.topic(self.registry.name("status"), key_type=bytes, value_type=bytes)
        self.workers_topic = self.app.topic(self.registry.name("workers"), key_type=bytes, value_type=bytes)
        self.dlq_topic = self.app.topic(self.registry.name("dlq"), key_type=bytes, value_type=bytes)
        self.scores_topic = self.app.topic(self.registry.name("scores"), key_type=bytes, value_type=bytes)
        self._dead: list[DeadLetter] = []  # the current batch's poison, dead-lettered before it is acked
        self._spans: BatchSpans | None = None  # the current batch's trace spans (tracing on)
        # JSON keys and values: str keys and dict values come back as such from the changelog.
        schema: Any = faust.Schema(key_serializer="json", value_serializer="json")
        table_options: dict[str, Any] = {"partitions": partitions, "schema": schema}
        self.jobs = self.app.Table("jobs", help="job_id -> JobMeta", **table_options)
        self.chunks = self.app.Table("chunks", help="job:candidate:chunk -> ChunkState", **table_options)
        self.positions = self.app.Table("positions", help="topic:partition -> next offset", **table_options)
        self._resync = PartitionResync(self.app, self.positions, self.stats)
        self.app.agent(self.sources, name="aggregate", concurrency=1)(self._consume)
        self.app.timer(options.status_interval, name="aggregate-status")(self._tick)
        self.app.timer(HEARTBEAT_INTERVAL_S, name="aggregate-heartbeat")(self._beat)
        self.app.task(self._follow_workers)

    async def _consume(self, stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            try:
                await self.process(events)
            except Exception:
                # faust acks a batch's offsets even when its body raised: exiting at once, before
                # the next commit, is the only way not to lose the batch. A supervisor restarts us
                # and the uncommitted records are read again.
                logger.critical("aggregator batch failed; exiting so no offset moves past it", exc_info=True)
                os._exit(70)

    async def process(self, events: Sequence[EventT[bytes]]) -> BatchResult:
        """Apply one batch of events: table writes, terminal statuses, clean-up, then positions."""
        batch = AggregateBatch(self.jobs, self.chunks, self._clock)
        positions = SourcePositions(self.positions.data)
        self._dead = []
        self._spans = batch_spans(self.jobs.data, self.chunks.data)
        for event in events:
            self._admit(batch, positions, event)
        result = batch.finish()
        sent = [*self._write(self.jobs, result.jobs), *self._write(self.chunks, result.chunks)]
        sent += self._delete(self.chunks, result.dropped_chunks)
        sent += [await send for send in map(self._dead_letter, self._dead)]
        async with self._send_lock:
            for job_id, value in result.statuses:
                sent.append(await self._send_status(job_id, value))
                self._sent.pop(job_id, None)
            for job_id in result.purged:  # after any status of the job sent before
                sent.append(await self._tombstone_status(job_id))
                self._sent.pop(job_id, None)
        # Every write of the batch is on the broker before the positions move past its records
        # (faust's producer flush can return with sends pending).
        await asyncio.gather(*sent)
        if self._spans is not None:
            self._spans.end()  # its records are counted for good now
        self._write(self.positions, positions.writes())
        await self._resync.after_batch(positions)
        return result

    def _admit(self, batch: AggregateBatch, positions: SourcePositions, event: EventT[bytes]) -> None:
        """Apply the event if it is its partition's next record (see SourcePositions)."""
        message = event.message
        floor = self._resync.floor(message.topic, message.partition, message.offset)
        verdict = positions.admit(message.topic, message.partition, message.offset, floor=floor)
        if verdict == "apply":
            self._apply(batch, event)
        else:
            self.stats[verdict] += 1

    def _apply(self, batch: AggregateBatch, event: EventT[bytes]) -> None:
        message = event.message
        try:
            if message.topic == self.registry.name("scores"):
                if is_usage_report(event.value):
                    report = decode(event.value, UsageReport)
                    self.stats[batch.add_usage_report(report, message.partition)] += 1
                else:
                    score = decode(event.value, ScoreRecord)
                    outcome = batch.add_score(score, message.partition)
                    self.stats[outcome] += 1
                    if self._spans is not None:
                        self._spans.folded(message, score, outcome)
                return
            job = decode(event.value, JobMessage)
        except SchemaError as exc:
            self._skip_undecodable(batch, event, exc)
            return
        if isinstance(job, EvalJob):
            batch.add_job(job, message.partition)
            if self._spans is not None:  # the client's job span, parent of the job's end here
                self._spans.job_read(message, job)
        elif isinstance(job, Cancel):
            batch.add_cancel(job, message.partition)
        elif isinstance(job, PurgeJob):
            batch.add_purge(job, message.partition)
            self.stats["purged"] += 1
        # OptimizeJob: the optimizer coordinator owns those statuses.

    def _skip_undecodable(self, batch: AggregateBatch, event: EventT[bytes], exc: SchemaError) -> None:
        """Count and skip a record nobody can read (never retried here).

        A scores record goes to the DLQ with its reason, and a score marked as an error for its
        task when its headers name one, as every worker does with its poison: the job completes
        and reports it. An undecodable job record goes to the DLQ too and fails its job
        (``invalid_submit``): its submitter would otherwise wait for a status that never comes.
        """
        message = event.message
        self.stats["undecodable"] += 1
        logger.warning(
            "skipping undecodable record %s[%s]@%s: %s", message.topic, message.partition, message.offset, exc
        )
        if message.topic in (self.registry.name("scores"), self.registry.name("jobs")):
            self._dead.append(self._letter(message, exc))
        if message.topic == self.registry.name("jobs"):
            job_id = invalid_job_id(event.key, event.value)
            if job_id is not None:
                batch.add_invalid_job(job_id, message.partition, str(exc))

    def _letter(self, message: Any, exc: SchemaError) -> DeadLetter:
        return DeadLetter.build(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=message.headers,
            error=exc,
            reason=schema_error_reason(exc),
            worker_id=self.worker_id,
            consumer_group=self.app.conf.id,
        )

    async def _dead_letter(self, letter: DeadLetter) -> Awaitable[Any]:
        """Send ``letter`` to the DLQ and its task's error score to scores; resolves once both are on
        the broker (the batch's positions move past the poison only then)."""
        self.stats["dead_lettered"] += 1
        sent = [
            await self.dlq_topic.send(
                key=key_for("dlq", letter), value=encode(letter), headers=list(headers_for(letter))
            )
        ]
        score = _dead_letter_score(letter, self.worker_id)
        if score is not None:
            sent.append(
                await self.scores_topic.send(
                    key=key_for("scores", score), value=encode(score), headers=list(headers_for(score))
                )
            )
        elif letter.original_topic == self.registry.name("scores"):  # a job record fails its job instead
            logger.warning("dead letter from %s names no job; not accounted", letter.original_topic)
        return asyncio.gather(*sent)

    def _write(self, table: Any, writes: dict[str, tuple[int, Any]]) -> list[Awaitable[Any]]:
        """Update the table and its changelog; the futures resolve once the broker has the records."""
        sent = []
        for key, (partition, value) in writes.items():
            table.data[key] = value
            sent.append(table.send_changelog(partition, key, value))
        return sent

    def _delete(self, table: Any, keys: dict[str, int]) -> list[Awaitable[Any]]:
        sent = []
        for key, partition in keys.items():
            table.data.pop(key, None)
            sent.append(table.send_changelog(partition, key, None, value_serializer="raw"))
        return sent

    async def _tombstone_status(self, job_id: str) -> Awaitable[Any]:
        """Delete a purged job's status from the status topic (compacted); resolves once sent."""
        delivered = await self.status_topic.send(key=job_id.encode(), value=None, value_serializer="raw")
        self.stats["statuses_tombstoned"] += 1
        return delivered

    async def _send_status(self, job_id: str, value: bytes) -> Awaitable[Any]:
        """Enqueue a status; the returned future resolves once the broker has it."""
        delivered = await self.status_topic.send(key=job_id.encode(), value=value)
        self.stats["statuses"] += 1
        if self.on_status is not None:
            self.on_status(value)
        return delivered

    async def _tick(self, app: faust.App) -> None:
        """Send the status of every running job this instance owns, when changed or as a heartbeat;
        drop the chunks of its finished jobs whose late-charge window has passed."""
        if not _settled(app):
            return
        await self._resync.check({self.registry.name("scores"), self.registry.name("jobs")})
        owned = {
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == self.registry.name("scores")
        }
        await self._account_deaths(owned)
        ended_before = time.time()
        for job_id in list(self.jobs.data.keys()):
            async with self._send_lock:
                value: Any = self.jobs.data.get(job_id)  # read again under the lock: it may have ended
                if _runs_here(value, owned):
                    await self._maybe_send_running(JobMeta.from_value(job_id, value))
                elif value and value.get("partition") in owned and value.get("purged_until") is not None:
                    self._forget_purged(JobMeta.from_value(job_id, value), ended_before)
                elif value and value.get("partition") in owned:
                    self._drop_late_window(JobMeta.from_value(job_id, value), ended_before)

    async def _follow_workers(self) -> None:
        """Feed every heartbeat on the workers topic to the death watch, for the app's life."""
        while True:
            reader = CompactedReader(self.settings, self.registry.name("workers"), decoder=self.deaths.decode)
            try:
                await reader.start()
            except KafkaError as exc:  # the broker is away at start: try again
                logger.warning("cannot follow the workers topic yet: %s", exc)
                await reader.aclose()
                await asyncio.sleep(5 * HEARTBEAT_INTERVAL_S)
                continue
            try:
                await asyncio.Event().wait()  # until the app stops (this task is cancelled)
            finally:
                await reader.aclose()

    async def _account_deaths(self, owned: set[int]) -> None:
        """Record what predictors found dead left unreported in the jobs this instance owns (and
        take back the share of those heard again); terminal statuses go out again with it."""
        dead, revived = self.deaths.verdicts()
        if not dead and not revived:
            return
        restated = self._record_deaths(_death_shares(dead, revived, self.jobs.data), owned)
        async with self._send_lock:
            sent = [await self._send_status(job_id, status) for job_id, status in restated]
        await asyncio.gather(*sent)

    def _record_deaths(
        self, shares: dict[str, dict[str, UsageRecord | None]], owned: set[int]
    ) -> list[tuple[str, bytes]]:
        """Apply ``job -> {death key -> usage or None}`` (no await: no batch can interleave); the
        terminal statuses to send again."""
        restated = []
        for job_id, by_worker in shares.items():
            stored: Any = self.jobs.data.get(job_id)
            if not stored or stored.get("partition") not in owned or stored.get("purged_until") is not None:
                continue  # another instance's job (it watches too), one never seen here, or purged
            meta = JobMeta.from_value(job_id, stored)
            changed = {key: usage for key, usage in by_worker.items() if record_unreported(meta, key, usage)}
            if not changed:
                continue
            for key, usage in changed.items():
                _log_death(job_id, key, usage)
            if meta.final is not None:
                restated.append((job_id, restate_unreported(meta, self._clock)))
            self._write(self.jobs, {job_id: (meta.partition, meta.to_value())})
            self.stats["unreported_recorded"] += 1
        return restated

    def _drop_late_window(self, meta: JobMeta, now: float) -> None:
        """Drop a terminal job's chunks once its late-charge window has passed (no await: no batch
        can read or write them in between)."""
        if not meta.late_window_over(now):
            return
        self._delete(self.chunks, {key: meta.partition for _, key in job_chunk_keys(meta)})
        meta.late_until = None
        self._write(self.jobs, {meta.job_id: (meta.partition, meta.to_value())})
        self.stats["late_windows_closed"] += 1

    def _forget_purged(self, meta: JobMeta, now: float) -> None:
        """Delete a purged job's marker once its late records are no longer expected (no await)."""
        if meta.purge_over(now):
            self._delete(self.jobs, {meta.job_id: meta.partition})
            self.stats["purges_forgotten"] += 1

    async def _maybe_send_running(self, meta: JobMeta) -> None:
        totals = job_totals(meta, self.chunks.data.get)
        now = self._clock.now()
        status = build_status(meta, totals, state=open_state(totals), seq=0, now=now)
        fingerprint = status_fingerprint(status)
        last = self._sent.get(meta.job_id)
        if last is not None and last[0] == fingerprint and time.monotonic() - last[1] < HEARTBEAT_S:
            return
        status = status.model_copy(update={"seq": self._clock.next_seq(now)})
        await self._send_status(meta.job_id, encode(status))
        self._sent[meta.job_id] = (fingerprint, time.monotonic())

    def heartbeat(self) -> WorkerHeartbeat:
        """What ``dspex status`` and the dashboard show about this aggregator."""
        scores = self.registry.name("scores")
        owned = [tp for tp in self.app.assignor.assigned_actives() if tp.topic == scores]
        return WorkerHeartbeat(
            worker_id=self.worker_id,
            kind="aggregate",
            host=socket.gethostname(),
            pid=os.getpid(),
            group_id=self.app.conf.id,
            version=dspex_version(),
            started_at=self._started_at,
            assigned_partitions=len(owned),
            metrics_url=self.metrics_url,
        )

    async def _beat(self, app: faust.App) -> None:
        beat = self.heartbeat()
        try:
            delivered = await self.workers_topic.send(
                key=key_for("workers", beat), value=encode(beat), headers=list(headers_for(beat))
            )
        except Exception as exc:  # a missed heartbeat is not worth stopping the aggregator for
            if is_connection_text(repr(exc)):
                REACHABILITY.unreachable("heartbeat", repr(exc))
            else:
                logger.warning("heartbeat of %s not sent: %s", self.worker_id, exc)
            return
        if isinstance(delivered, asyncio.Future):  # a delivered heartbeat: Kafka answers (again)
            delivered.add_done_callback(_note_delivery)


def _death_shares(
    dead: list[WorkerHeartbeat], revived: list[str], jobs: Any
) -> dict[str, dict[str, UsageRecord | None]]:
    """``job -> {death key -> what it left unreported, or None to take it back}``."""
    shares: dict[str, dict[str, UsageRecord | None]] = {}
    for beat in dead:
        for job_id, usage in beat.unreported.items():
            shares.setdefault(job_id, {})[death_key(beat)] = usage
    for key in revived:
        for job_id, value in jobs.items():
            if value and key in (value.get("unreported") or {}):
                shares.setdefault(job_id, {})[key] = None
    return shares


def _log_death(job_id: str, key: str, usage: UsageRecord | None) -> None:
    if usage is None:
        logger.info("worker %s is heard again: its unreported LM calls of job %s are taken back", key, job_id)
    else:
        logger.warning(
            "predictor %s stopped without a final heartbeat (killed?): up to %s LM calls of job %s "
            "are not charged",
            key, usage.lm_calls, job_id,
        )  # fmt: skip


def _dead_letter_score(letter: DeadLetter, worker_id: str) -> ScoreRecord | None:
    """The error score that accounts a dead-lettered record to its task, when its headers name one.

    The aggregator does not know the job's ``failure_score`` (it is not in the jobs table): the
    error score counts 0.0, the default.
    """
    if letter.job_id is None or letter.candidate_id is None or letter.example_index is None:
        return None
    message = f"dead-lettered by the aggregate worker ({letter.reason}): {letter.error}"
    return ScoreRecord(
        job_id=letter.job_id,
        candidate_id=letter.candidate_id,
        example_index=letter.example_index,
        task_id=task_id_for(letter.job_id, letter.candidate_id, letter.example_index),
        score=0.0,
        error=ErrorInfo(type=letter.error_type, message=message[:2000], systemic=False),
        source=SCORE_SOURCE_DLQ,
        worker_id=worker_id,
    )


def _own_state_folder(data_dir: Path, worker_id: str) -> StateFolder:
    """Lock this aggregator's state folder for its life, then remove the folders of earlier
    aggregators that no live process owns (:mod:`dspex.processors.aggregate_folders`)."""
    folder = claim_state_folder(data_dir, worker_id)
    remove_stale_folders(data_dir, keep=folder.path)
    return folder


def _runs_here(value: Any, owned: set[int]) -> bool:
    """Whether a jobs-table value is a known, unfinished job on a partition this instance owns."""
    return (
        bool(value) and value.get("final") is None and value.get("known") and value.get("partition") in owned
    )


def _note_delivery(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        REACHABILITY.reachable()


def _settled(app: faust.App) -> bool:
    """Whether tables hold exactly the owned partitions: not rebalancing, recovered."""
    recovery: Any = getattr(app.tables, "recovery", None)
    recovered = recovery is not None and recovery.completed.is_set()
    return recovered and not app.rebalancing and not app.in_recovery


def _readiness(app: faust.App) -> str | None:
    """Why /readyz says the aggregator is not ready (None: it is); run on faust's loop."""
    if REACHABILITY.down:
        return "Kafka is unreachable"
    if not _settled(app):
        return "tables not recovered yet, or the group is rebalancing"
    return None


def _app_options(
    settings: KafkaSettings,
    given: AggregatorOptions,
    worker_id: str,
    partitions: int,
    replication_factor: int,
) -> dict[str, Any]:
    web_port = given.web_port
    options: dict[str, Any] = {
        "id": f"{given.prefix}aggregate",
        "broker": [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        "broker_client_id": settings.client_id,
        "broker_credentials": _credentials(settings),
        "store": "memory://",  # tables are rebuilt from their changelogs on start
        "datadir": str(given.data_dir / worker_id),
        "web_enabled": web_port is not None,
        "web_port": web_port or 6066,
        "web_bind": "127.0.0.1",
        "topic_partitions": partitions,
        "topic_replication_factor": replication_factor,
        "topic_disable_leader": True,  # no on_leader timers: skip faust's leader topic
        "consumer_auto_offset_reset": "earliest",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "producer_acks": -1,
        "consumer_max_fetch_size": 4 * 1024 * 1024,  # scores carry outputs and traces
    }
    if given.fast_groups:
        options.update(broker_session_timeout=6.0, broker_heartbeat_interval=1.0)
    if given.commit_interval is not None:
        options["broker_commit_interval"] = given.commit_interval
    if given.commit_every is not None:
        options["broker_commit_every"] = given.commit_every
    return options


def _credentials(settings: KafkaSettings) -> Any:
    """faust credentials for the same SASL/SSL settings every other client of ours uses."""
    kwargs = settings.aiokafka()
    ssl_context = kwargs.get("ssl_context")
    if settings.security_protocol == "PLAINTEXT":
        return None
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    if settings.sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise ConfigurationError(
            f"the aggregator supports SASL PLAIN and SCRAM, not {settings.sasl_mechanism}"
        )
    return faust.SASLCredentials(
        username=kwargs["sasl_plain_username"],
        password=kwargs["sasl_plain_password"],
        ssl_context=ssl_context,
        mechanism=settings.sasl_mechanism,
    )


def build_aggregator(settings: KafkaSettings, options: AggregatorOptions) -> Aggregator:
    """Create our topics if missing, check jobs and scores are co-partitioned, build the app.

    ``replication_factor`` (topics we create and faust's changelogs) defaults to the number of
    brokers, at most 3. Raises BrokerUnavailableError, TopicError or ConfigurationError.
    """
    admin = KafkaAdmin(settings)
    brokers = admin.probe()
    replicas = options.replication_factor or min(brokers, 3)
    registry = TopicRegistry(options.prefix, replication_factor=replicas)
    admin.ensure_topics(registry)
    partitions = _copartitioned(admin, registry)
    return Aggregator(settings, options, partitions=partitions, replication_factor=replicas)


def _copartitioned(admin: KafkaAdmin, registry: TopicRegistry) -> int:
    names = [registry.name("scores"), registry.name("jobs")]
    counts = admin.partition_counts(names)
    if counts[names[0]] != counts[names[1]]:
        raise ConfigurationError(
            f"{names[1]} has {counts[names[1]]} partitions and {names[0]} has {counts[names[0]]}: "
            "the aggregator needs them equal (a job's records and scores on the same partition); "
            "recreate the jobs topic with as many partitions as the scores topic"
        )
    return counts[names[0]]


def run_aggregator(settings: KafkaSettings, options: AggregatorOptions) -> None:
    """Run the aggregator until SIGTERM or SIGINT (blocking; faust's worker owns the event loop).

    With ``metrics`` it serves /metrics (job gauges, and every pipeline group's lag read through the
    admin API every 5 s) on ``metrics_port`` or a free port in 9400-9499, registered in ``targets_dir``
    for Prometheus; a port in use is a ConfigurationError before anything starts.
    """
    start_aggregator_tracing(options.otlp_endpoint)
    # uvloop where installed (DSPEX_EVENT_LOOP, see dspex._loop), set before faust's app and worker
    # are built: both take the thread's current loop
    loop = set_worker_loop()
    aggregator = build_aggregator(settings, options)
    observed = None
    if options.metrics:
        observed = AggregatorMetrics(
            settings.for_worker("aggregate", aggregator.worker_id),
            prefix=options.prefix,
            worker_id=aggregator.worker_id,
            stats=aggregator.stats,
            host=options.metrics_host,
            port=options.metrics_port,
            targets_dir=options.targets_dir,
        ).start()
        aggregator.on_status = observed.status_sent
        if observed.server is not None:
            aggregator.metrics_url = observed.server.url
    tune_gc_for_worker()  # a process of its own from here on: see dspex._gc
    quiet_aiokafka_loggers()  # a broker outage: one warning and a summary every 10 s, not a flood
    worker = _GuardedWorker(
        aggregator.app, loglevel=options.loglevel, quiet=True, redirect_stdouts=False, loop=loop
    )
    worker.guard = StopGuard(
        aggregator.worker_id, request_stop=worker.stop_on_signal, left_undone=_left_undone
    )
    if observed is not None and observed.server is not None:
        # /healthz: faust's loop answers; /readyz: Kafka answers and the tables are recovered
        observed.server.health.attach(worker.loop, ready=lambda: _readiness(aggregator.app))
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        if observed is not None:
            observed.stop()
        logger.info("aggregator stopped: %s", dict(aggregator.stats))


class _GuardedWorker(faust.Worker):
    """faust's worker whose SIGTERM / SIGINT go through dspex's stop guard.

    faust's own handlers ignore a second signal, and its stop waits without a timeout in the
    producer's flush while the broker is down (aiokafka): the guard bounds the whole stop.
    """

    guard: StopGuard | None = None

    def _install_signal_handlers_unix(self) -> None:
        super()._install_signal_handlers_unix()
        if self.guard is not None:
            # faust's loop handlers for these go first: uvloop would still run them beside the
            # guard's (it dispatches a signal from its wakeup fd whatever Python handler is set)
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.loop.remove_signal_handler(signum)
            self.guard.install(self.loop)

    def stop_on_signal(self) -> None:
        """faust's graceful stop, as its own SIGTERM handler starts it (runs on the loop)."""
        self._on_sigterm()


def _left_undone() -> str:
    return (
        "scores and jobs records faust had not committed are read again on restart; those already "
        "counted are recognised as duplicates (the positions table), so nothing counts twice"
    )


def main(argv: Iterable[str] | None = None) -> int:
    """Command-line entry point (tests start the aggregator this way in a subprocess)."""
    prog = "python -m dspex.processors.aggregator"
    bootstrap, options = parse_options(argv, prog, description=__doc__)
    run_aggregator(KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap), options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
