"""The routes over a job's stored records: its examples one by one, and two evaluations compared.

``GET /api/jobs/{job_id}/examples`` (``candidate``, ``offset``, ``limit``): one row per example;
``GET /api/jobs/{job_id}/examples/{index}`` (``candidate`` when the job has several): one example
in full; ``GET /api/compare?a=JOB&b=JOB`` (``candidate_a``, ``candidate_b``, ``threshold``): the
paired comparison of :mod:`.compare`. Errors are JSON: 404 for an unknown job or example, 400 for a
bad parameter, an optimization (its examples are in its sub-jobs) or two different datasets.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dspex.errors import ConfigurationError
from dspex.observability.dashboard.appkeys import RECORDS, SOURCE
from dspex.observability.dashboard.compare import compare_scores
from dspex.observability.dashboard.examples import example_detail, example_rows
from dspex.observability.dashboard.listing import int_param
from dspex.observability.dashboard.records import JobRecords
from dspex.schemas.status import JobStatus

__all__ = ["add_record_routes"]


def add_record_routes(app: web.Application) -> None:
    """Add the per-example and comparison routes to ``app``."""
    app.router.add_get("/api/jobs/{job_id}/examples", _examples)
    app.router.add_get("/api/jobs/{job_id}/examples/{index}", _example)
    app.router.add_get("/api/compare", _compare)


class _Refused(Exception):
    """A request the API answers with a JSON error (``status``, ``body``)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", ""))
        self.status, self.body = status, body


async def _examples(request: web.Request) -> web.Response:
    try:
        status, records = await _evaluation(request, request.match_info["job_id"])
        offset = int_param(request.query, "offset", 0, 0, None)
        limit = int_param(request.query, "limit", 100, 1, 1000)
    except _Refused as refused:
        return _json(refused.body, status=refused.status)
    except ConfigurationError as exc:
        return _json({"error": str(exc)}, status=400)
    rows = example_rows(records.scores, request.query.get("candidate") or None)
    return _json(
        {
            "job_id": status.job_id,
            "candidates": [c.candidate_id for c in status.candidates],
            "input_keys": _input_keys(records),
            "examples": rows[offset : offset + limit],
            "total": len(rows),
            "offset": offset,
            "limit": limit,
        }
    )


async def _example(request: web.Request) -> web.Response:
    try:
        status, records = await _evaluation(request, request.match_info["job_id"])
        index = int_param(request.match_info, "index", 0, 0, None)
        candidate = _candidate(status, request.query.get("candidate"), "candidate")
    except _Refused as refused:
        return _json(refused.body, status=refused.status)
    except ConfigurationError as exc:
        return _json({"error": str(exc)}, status=400)
    found = next(
        (r for r in records.scores if r.candidate_id == candidate and r.example_index == index), None
    )
    if found is None:
        return _json({"error": "no result for this example yet", "example_index": index}, status=404)
    detail = example_detail(found, _input_keys(records), records.call_log(found))
    return _json({"job_id": status.job_id, **detail})


async def _compare(request: web.Request) -> web.Response:
    query = request.query
    try:
        if not query.get("a") or not query.get("b"):
            raise ConfigurationError("name the two evaluations: /api/compare?a=JOB_ID&b=JOB_ID")
        status_a, records_a = await _evaluation(request, query["a"])
        status_b, records_b = await _evaluation(request, query["b"])
        _same_dataset(records_a, records_b)
        candidate_a = _candidate(status_a, query.get("candidate_a"), "candidate_a")
        candidate_b = _candidate(status_b, query.get("candidate_b"), "candidate_b")
        threshold = float(query.get("threshold", "0.5"))
    except _Refused as refused:
        return _json(refused.body, status=refused.status)
    except (ConfigurationError, ValueError) as exc:
        return _json({"error": str(exc)}, status=400)
    compared = compare_scores(
        [r for r in records_a.scores if r.candidate_id == candidate_a],
        [r for r in records_b.scores if r.candidate_id == candidate_b],
        threshold,
    )
    sides = {"a": (status_a, candidate_a), "b": (status_b, candidate_b)}
    named = {
        side: {"job_id": s.job_id, "name": s.name, "state": s.state, "candidate_id": c}
        for side, (s, c) in sides.items()
    }
    return _json({**named, **compared})


async def _evaluation(request: web.Request, job_id: str) -> tuple[JobStatus, JobRecords]:
    status = request.app[SOURCE].status(job_id)
    if status is None:
        raise _Refused(404, {"error": "unknown job", "job_id": job_id})
    if not isinstance(status, JobStatus):
        raise _Refused(400, {"error": "an optimization has no examples of its own: open one of its sub-jobs"})
    reader = request.app[RECORDS]
    if reader is None:
        raise _Refused(404, {"error": "this dashboard does not read job records", "job_id": job_id})
    return status, await reader(status)


def _candidate(status: JobStatus, asked: str | None, param: str) -> str:
    known = [c.candidate_id for c in status.candidates]
    if asked:
        if asked not in known:
            raise ConfigurationError(f"job {status.job_id} has no candidate {asked}: {', '.join(known)}")
        return asked
    if len(known) != 1:
        raise ConfigurationError(
            f"job {status.job_id} has {len(known)} candidates: pass {param}=one of {', '.join(known)}"
        )
    return known[0]


def _same_dataset(a: JobRecords, b: JobRecords) -> None:
    """Refuse two evaluations on different examples (by dataset fingerprint, else by size)."""
    if a.job is None or b.job is None:
        return  # job records compacted away or unread: the pairing by example index stands alone
    prints = [job.dataset.fingerprint if job.dataset else None for job in (a.job, b.job)]
    if None not in prints and prints[0] != prints[1]:
        raise ConfigurationError(f"not the same dataset: fingerprints {prints[0]} and {prints[1]}")
    if a.job.num_examples != b.job.num_examples:
        raise ConfigurationError(
            f"not the same dataset: {a.job.num_examples} and {b.job.num_examples} examples"
        )


def _input_keys(records: JobRecords) -> list[str]:
    job = records.job
    return list(job.dataset.input_keys) if job is not None and job.dataset is not None else []


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)
