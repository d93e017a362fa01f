"""What the dashboard tests serve: fixed job statuses as the dashboard's source, and an app on a
free loopback port reached over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from aiohttp import web

from dspex.observability.dashboard import start_site
from dspex.observability.dashboard.appkeys import Status
from dspex.schemas import WorkerHeartbeat


class FixedJobs:
    """These statuses, and no workers (the dashboard's ``DashboardSource``)."""

    def __init__(self, statuses: Iterable[Status] = ()) -> None:
        self._statuses = {status.job_id: status for status in statuses}

    def statuses(self) -> list[Status]:
        return list(self._statuses.values())

    def status(self, job_id: str) -> Status | None:
        return self._statuses.get(job_id)

    def heartbeats(self) -> list[WorkerHeartbeat]:
        return []


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """``app`` served on a free loopback port until the block ends; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    runner = await start_site(app, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
