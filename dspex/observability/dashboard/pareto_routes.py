"""``GET /api/jobs/{job_id}/pareto``: a GEPA optimization's Pareto front, lineage and cost so far.

The answer is :func:`~dspex.observability.dashboard.pareto.pareto_view` of the job's latest
checkpoint (optimizer-state topic) with the job's usage from its status; ``checkpoint: false`` and
no candidates while the run has written none. Errors are JSON: 404 for an unknown job or a
dashboard that does not read checkpoints, 400 for an evaluation or an optimization of another
optimizer (the page shows the section for GEPA runs only).

:class:`KafkaCheckpoints` reads the latest checkpoint of a job from the topic on demand (the job's
partition from a little before it started, like :mod:`.records`), again only when the job's status
has moved on: the coordinator writes the status after the checkpoint is acknowledged, so a newer
status is the sign of a newer checkpoint.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from dspex.errors import SchemaError
from dspex.observability.dashboard.appkeys import SOURCE
from dspex.observability.dashboard.pareto import cost_of, pareto_view
from dspex.observability.dashboard.records import CLOCK_SLACK, key_values
from dspex.schemas import decode
from dspex.schemas.checkpoints import OptimizerCheckpoint
from dspex.schemas.status import OptimizeStatus
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry

__all__ = [
    "CHECKPOINTS",
    "CheckpointReader",
    "KafkaCheckpoints",
    "add_pareto_routes",
    "read_latest_checkpoint",
]

CheckpointReader = Callable[[OptimizeStatus], Awaitable[OptimizerCheckpoint | None]]
"""Reads an optimization's latest checkpoint (None: none written yet)."""

CHECKPOINTS: web.AppKey[CheckpointReader | None] = web.AppKey("checkpoints")

GEPA = "gepa"
_CACHED_JOBS = 16


def add_pareto_routes(app: web.Application, checkpoints: CheckpointReader | None) -> None:
    """Add ``GET /api/jobs/{job_id}/pareto`` to ``app``, reading checkpoints with ``checkpoints``."""
    app[CHECKPOINTS] = checkpoints
    app.router.add_get("/api/jobs/{job_id}/pareto", _pareto)


async def _pareto(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    status = request.app[SOURCE].status(job_id)
    if status is None:
        return _json({"error": "unknown job", "job_id": job_id}, status=404)
    if not isinstance(status, OptimizeStatus) or status.optimizer != GEPA:
        return _json({"error": "the Pareto front is a GEPA optimization's", "job_id": job_id}, status=400)
    reader = request.app[CHECKPOINTS]
    if reader is None:
        return _json({"error": "this dashboard does not read checkpoints", "job_id": job_id}, status=404)
    checkpoint = await reader(status)
    view = pareto_view(checkpoint, status.usage) if checkpoint is not None else None
    if view is None:
        return _json({"job_id": job_id, "checkpoint": False, "candidates": [], "cost": cost_of(status.usage)})
    return _json({**view, "checkpoint": True, "state": status.state})


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


class KafkaCheckpoints:
    """The latest checkpoint of each optimization asked about, read again when its status moved
    (see the module); the last few jobs' are kept."""

    def __init__(self, settings: KafkaSettings, registry: TopicRegistry) -> None:
        self._settings, self._registry = settings, registry
        self._cache: OrderedDict[str, tuple[Any, OptimizerCheckpoint | None]] = OrderedDict()
        self._lock = asyncio.Lock()

    async def latest(self, status: OptimizeStatus) -> OptimizerCheckpoint | None:
        """``status``'s job's latest checkpoint on the topic (None: none yet)."""
        mark = (status.seq, status.state, status.updated_at)
        async with self._lock:  # one read per job and status, however many pages poll
            cached = self._cache.get(status.job_id)
            if cached is not None and cached[0] == mark:
                self._cache.move_to_end(status.job_id)
                return cached[1]
            found = await asyncio.to_thread(
                read_latest_checkpoint, self._settings, self._registry, status.job_id, status.started_at
            )
            self._cache[status.job_id] = (mark, found)
            self._cache.move_to_end(status.job_id)
            while len(self._cache) > _CACHED_JOBS:
                self._cache.popitem(last=False)
            return found


def read_latest_checkpoint(
    settings: KafkaSettings,
    registry: TopicRegistry,
    job_id: str,
    started_at: datetime | None,
    timeout: float = 10.0,
) -> OptimizerCheckpoint | None:
    """The last checkpoint of ``job_id`` on the optimizer-state topic (blocking)."""
    since = started_at - CLOCK_SLACK if started_at is not None else None
    latest: OptimizerCheckpoint | None = None
    for value in key_values(settings, registry.name("optimizer-state"), job_id, since, timeout):
        try:
            checkpoint = decode(value, OptimizerCheckpoint)
        except SchemaError:
            continue
        if latest is None or checkpoint.step >= latest.step:
            latest = checkpoint
    return latest
