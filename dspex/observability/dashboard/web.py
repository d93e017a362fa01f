"""The live dashboard: an aiohttp app over readers of the status and workers topics.

Routes: ``/`` (the page), ``/static/...`` (its script and style, shipped in the package),
``GET /api/jobs``, ``GET /api/jobs/{job_id}`` (404 with a JSON body for an unknown job) and
``GET /api/workers``. The page polls the API and redraws in place; it renders every string as text
and the server sends a Content-Security-Policy that allows no inline script, so a job named
``<script>...`` is shown, never run.

The source of truth is the whole status topic (every partition, through
:class:`~dspex.streams.reader.CompactedReader`), not one aggregator's local tables, so the page
shows every job whichever instance writes its status.

    >>> await serve_dashboard(settings, prefix="dspex.", host="127.0.0.1", port=8765)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from dspex.errors import ConfigurationError
from dspex.observability.dashboard.views import job_detail, jobs_view, workers_view
from dspex.schemas import StatusMessage, WorkerHeartbeat, decode
from dspex.schemas.status import JobStatus, OptimizeStatus
from dspex.streams.config import KafkaSettings
from dspex.streams.reader import CompactedReader
from dspex.streams.topics import TopicRegistry

__all__ = ["DashboardSource", "KafkaDashboardSource", "create_app", "serve_dashboard", "start_site"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_HOST = "127.0.0.1"
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

Status = JobStatus | OptimizeStatus


class DashboardSource(Protocol):
    """Where the dashboard reads jobs and workers from."""

    def statuses(self) -> Iterable[Status]: ...

    def status(self, job_id: str) -> Status | None: ...

    def heartbeats(self) -> Iterable[WorkerHeartbeat]: ...


SOURCE: web.AppKey[DashboardSource] = web.AppKey("source")


class KafkaDashboardSource:
    """The latest status of every job and heartbeat of every worker, followed from the topics."""

    def __init__(self, settings: KafkaSettings, prefix: str) -> None:
        registry = TopicRegistry(prefix)
        self._status: CompactedReader[Status] = CompactedReader(
            settings, registry.name("status"), decoder=_decode_status
        )
        self._workers: CompactedReader[WorkerHeartbeat] = CompactedReader(
            settings, registry.name("workers"), decoder=WorkerHeartbeat
        )

    async def start(self) -> None:
        """Start following both topics (TopicError when they do not exist yet)."""
        await self._status.start()
        await self._workers.start()

    async def aclose(self) -> None:
        """Stop following."""
        await self._status.aclose()
        await self._workers.aclose()

    async def wait_caught_up(self, timeout: float) -> None:
        """Until both topics were read to where they ended at start."""
        await self._status.wait_caught_up(timeout)
        await self._workers.wait_caught_up(timeout)

    def statuses(self) -> Iterable[Status]:
        return self._status.snapshot().values()

    def status(self, job_id: str) -> Status | None:
        return self._status.get(job_id)

    def heartbeats(self) -> Iterable[WorkerHeartbeat]:
        return self._workers.snapshot().values()


def create_app(source: DashboardSource) -> web.Application:
    """The dashboard's aiohttp application over ``source``."""
    app = web.Application(middlewares=[_security_headers])
    app[SOURCE] = source
    app.router.add_get("/", _index)
    app.router.add_get("/api/jobs", _jobs)
    app.router.add_get("/api/jobs/{job_id}", _job)
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
    settings: KafkaSettings, *, prefix: str, host: str = DEFAULT_HOST, port: int = 8765
) -> None:
    """Serve the dashboard until cancelled (Ctrl-C)."""
    source = KafkaDashboardSource(settings, prefix)
    runner = await start_site(create_app(source), host, port)
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
    return _json({"jobs": jobs_view(source.statuses())})


async def _job(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    job_id = request.match_info["job_id"]
    status = source.status(job_id)
    if status is None:
        return _json({"error": "unknown job", "job_id": job_id}, status=404)
    return _json(job_detail(status))


async def _workers(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    return _json({"workers": workers_view(source.heartbeats(), datetime.now(UTC))})


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _decode_status(value: bytes) -> Status:
    decoded: Status = decode(value, StatusMessage)
    return decoded
