"""The live dashboard: an aiohttp app over readers of the status, workers and scores topics.

Routes: ``/`` (the page), ``/static/...`` (its script and style, shipped in the package),
``GET /api/jobs`` (query: ``state``, ``kind``, ``name``, ``offset``, ``limit``, ``flat``; a bad
value is a 400 with a JSON body; see :mod:`.listing`), ``GET /api/jobs/{job_id}`` (404 with a JSON
body for an unknown job), ``GET /api/workers``, and over a job's stored records the routes of
:mod:`.record_routes` (its examples one by one; two evaluations compared) and a GEPA run's Pareto
front (:mod:`.pareto_routes`, from its latest checkpoint). The page polls the API
and redraws in place; it renders every string as text and the server sends a
Content-Security-Policy that allows no inline script, so a job named ``<script>...`` is shown,
never run. With a token (:mod:`.access`) every route, the page and its assets included, answers 401
to a request without it; :func:`serve_dashboard` refuses a non-loopback address without one.

The source of truth is the whole status topic (every partition, through
:class:`~dspex.streams.reader.CompactedReader`), not one aggregator's local tables, so the page
shows every job whichever instance writes its status.

    >>> await serve_dashboard(settings, prefix="dspex.", host="127.0.0.1", port=8765)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from dspex.errors import ConfigurationError
from dspex.observability.dashboard.access import check_binding, require_token
from dspex.observability.dashboard.appkeys import (
    RECORDS,
    SOURCE,
    TRACKER,
    DashboardSource,
    RecordsReader,
    Status,
)
from dspex.observability.dashboard.listing import JobQuery
from dspex.observability.dashboard.pareto_routes import CheckpointReader, KafkaCheckpoints, add_pareto_routes
from dspex.observability.dashboard.record_routes import add_record_routes
from dspex.observability.dashboard.records import JobRecords, read_job_records
from dspex.observability.dashboard.stalls import ProgressTracker
from dspex.observability.dashboard.views import Context, job_detail, jobs_page, workers_page
from dspex.schemas import StatusMessage, WorkerHeartbeat, decode
from dspex.schemas.status import JobStatus
from dspex.streams.config import KafkaSettings
from dspex.streams.reader import CompactedReader
from dspex.streams.topics import TopicRegistry

__all__ = ["DashboardSource", "KafkaDashboardSource", "create_app", "serve_dashboard", "start_site"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_HOST = "127.0.0.1"
_CACHED_JOBS = 16
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class KafkaDashboardSource:
    """The latest status of every job and heartbeat of every worker, followed from the topics, and
    when each job last progressed (status topic) and how long its examples take (scores topic)."""

    def __init__(self, settings: KafkaSettings, prefix: str) -> None:
        registry = TopicRegistry(prefix)
        self._settings, self._registry = settings, registry
        # a finished job's records do not change: the last few read are kept
        self._finished: OrderedDict[str, JobRecords] = OrderedDict()
        self.tracker = ProgressTracker()
        self.checkpoints = KafkaCheckpoints(settings, registry)  # GEPA runs' fronts, on demand
        self._status: CompactedReader[Status] = CompactedReader(
            settings, registry.name("status"), decoder=self._decode_status
        )
        self._workers: CompactedReader[WorkerHeartbeat] = CompactedReader(
            settings, registry.name("workers"), decoder=WorkerHeartbeat
        )
        # keyed by job id: the reader keeps one small value per job; every score passes the decoder
        self._scores: CompactedReader[float] = CompactedReader(
            settings, registry.name("scores"), decoder=self._note_latency
        )

    async def start(self) -> None:
        """Start following the topics (TopicError when they do not exist yet)."""
        await self._status.start()
        await self._workers.start()
        await self._scores.start()

    async def aclose(self) -> None:
        """Stop following."""
        await self._status.aclose()
        await self._workers.aclose()
        await self._scores.aclose()

    async def wait_caught_up(self, timeout: float) -> None:
        """Until the topics were read to where they ended at start."""
        await self._status.wait_caught_up(timeout)
        await self._workers.wait_caught_up(timeout)
        await self._scores.wait_caught_up(timeout)

    async def records(self, status: JobStatus) -> JobRecords:
        """The evaluation's job and score records, as the topics hold them now."""
        for gone in [job_id for job_id in self._finished if self.status(job_id) is None]:
            del self._finished[gone]  # purged: its records go with its status
        cached = self._finished.get(status.job_id)
        if cached is not None:
            self._finished.move_to_end(status.job_id)
            return cached
        read = await asyncio.to_thread(
            read_job_records, self._settings, self._registry, status.job_id, status.started_at
        )
        if status.finished:
            self._finished[status.job_id] = read
            while len(self._finished) > _CACHED_JOBS:
                self._finished.popitem(last=False)
        return read

    def _decode_status(self, value: bytes) -> Status:
        status = _decode_status(value)
        self.tracker.observe(status)
        return status

    def _note_latency(self, value: bytes) -> float:
        latency = _score_latency(value)
        if latency is not None:
            self.tracker.observe_latency(*latency)
        return latency[1] if latency is not None else 0.0

    def statuses(self) -> Iterable[Status]:
        return self._status.snapshot().values()

    def status(self, job_id: str) -> Status | None:
        return self._status.get(job_id)

    def heartbeats(self) -> Iterable[WorkerHeartbeat]:
        return self._workers.snapshot().values()


def create_app(
    source: DashboardSource,
    tracker: ProgressTracker | None = None,
    records: RecordsReader | None = None,
    *,
    token: str | None = None,
    checkpoints: CheckpointReader | None = None,
) -> web.Application:
    """The dashboard's aiohttp application over ``source``; ``tracker``: the jobs' progress history
    for stall detection (none: a running job counts as progressing at its latest status);
    ``records``: how to read a job's stored records (none: the per-example routes answer 404);
    ``token``: what every request must carry (none: no check; see :mod:`.access`); ``checkpoints``:
    how to read an optimization's latest checkpoint (none: the Pareto route answers 404)."""
    middlewares: list[Middleware] = [_security_headers]
    if token is not None:
        middlewares.append(require_token(token))
    app = web.Application(middlewares=middlewares)
    app[SOURCE] = source
    app[TRACKER] = tracker if tracker is not None else ProgressTracker()
    app[RECORDS] = records
    app.router.add_get("/", _index)
    app.router.add_get("/api/jobs", _jobs)
    app.router.add_get("/api/jobs/{job_id}", _job)
    add_record_routes(app)
    add_pareto_routes(app, checkpoints)
    app.router.add_get("/api/workers", _workers)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Bind ``host:port`` and serve ``app``; a port in use is a ConfigurationError naming it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"dashboard port {port} on {host} is already in use; pass another --port"
            ) from exc
        raise ConfigurationError(f"cannot serve the dashboard on {host}:{port}: {exc}") from exc
    return runner


async def serve_dashboard(
    settings: KafkaSettings,
    *,
    prefix: str,
    host: str = DEFAULT_HOST,
    port: int = 8765,
    token: str | None = None,
    insecure_no_token: bool = False,
) -> None:
    """Serve the dashboard until cancelled (Ctrl-C). A ``host`` other than loopback needs a
    ``token`` unless ``insecure_no_token`` (ConfigurationError before anything binds)."""
    check_binding(host, token, insecure_no_token=insecure_no_token)
    source = KafkaDashboardSource(settings, prefix)
    app = create_app(
        source, source.tracker, source.records, token=token, checkpoints=source.checkpoints.latest
    )
    runner = await start_site(app, host, port)
    try:
        await source.start()
        logger.info("dashboard at http://%s:%s/", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await source.aclose()


# ----------------------------------------------------------------------------- handlers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _jobs(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    try:
        query = JobQuery.parse(request.query)
    except ConfigurationError as exc:
        return _json({"error": str(exc)}, status=400)
    return _json(jobs_page(source.statuses(), query, _context(request)))


async def _job(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    job_id = request.match_info["job_id"]
    status = source.status(job_id)
    if status is None:
        return _json({"error": "unknown job", "job_id": job_id}, status=404)
    return _json(job_detail(status, _context(request), source.statuses()))


async def _workers(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    return _json(workers_page(source.heartbeats(), datetime.now(UTC)))


def _context(request: web.Request) -> Context:
    source = request.app[SOURCE]
    # a job stays "progressing" from its latest status until the tracker has seen it (a source
    # without one: tests, other readers)
    tracker = request.app[TRACKER]
    statuses = list(source.statuses())
    tracker.retain({status.job_id for status in statuses})
    for status in statuses:
        if tracker.last_progress(status.job_id) is None:
            tracker.observe(status)
    return Context(now=datetime.now(UTC), tracker=tracker, beats=list(source.heartbeats()))


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _decode_status(value: bytes) -> Status:
    decoded: Status = decode(value, StatusMessage)
    return decoded


def _score_latency(value: bytes) -> tuple[str, float, str | None] | None:
    """``(job_id, latency_s, source)`` of a score record; None for other values (usage reports) and
    bad ones.

    Read as plain JSON rather than validated as a ScoreRecord: the dashboard needs three fields of
    every record, and a record it cannot use is no reason to log a warning per message.
    """
    try:
        record = json.loads(value)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("kind") == "usage":
        return None
    job_id, latency = record.get("job_id"), record.get("latency_s")
    if isinstance(job_id, str) and isinstance(latency, int | float) and not isinstance(latency, bool):
        source = record.get("source")
        return job_id, float(latency), source if isinstance(source, str) else None
    return None
