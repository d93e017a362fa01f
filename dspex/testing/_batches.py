"""The simulated LM's Batch API, shaped like OpenAI's ``/v1/batches`` (a simulation, in memory).

- ``POST /v1/batches`` ``{"input_file_id", "endpoint": "/v1/chat/completions", "completion_window":
  "24h", "metadata"}`` starts a batch over an uploaded JSONL file (purpose ``batch``), one request a
  line: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``;
- ``GET /v1/batches/{id}`` answers its batch object, ``GET /v1/batches?limit=&after=`` lists the
  batches newest first (``after``: the last id of the previous page);
- ``POST /v1/batches/{id}/cancel`` stops a batch that has not finished.

A batch goes ``validating`` -> ``in_progress`` (for the ``batch_delay`` knob's seconds, and as long
as the ``batch_hold`` knob is on) -> ``finalizing`` -> ``completed``; a file that is not valid JSONL
of requests, has more than ``batch_max_requests`` lines or ``batch_max_bytes`` bytes ends ``failed``
with the reasons in ``errors``. With ``batch_expire_after`` shorter than the delay the batch ends
``expired``: the share of requests the elapsed time covers is answered, the others land in the error
file with code ``batch_expired`` (a cancelled batch likewise, code ``batch_cancelled``). Each request
is answered exactly as ``POST /v1/chat/completions`` would answer it (same validation, same
completion code, so the same content); a ``batch_fail`` share of them gets an injected 500 instead.
Answers go to an output file and failures to an error file (purpose ``batch_output``), one JSON
object a line with the request's ``custom_id``, read back through ``GET /v1/files/{id}/content``.

The server's ``stats()["batch"]`` counts batches and their requests, and ``repeated``: requests whose
content was already answered (200) in an earlier batch, which a resumable client never causes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dspex.testing import _errors as err
from dspex.testing._completion import request_hash
from dspex.testing._files import FileRejected, found, gated, page_after

if TYPE_CHECKING:
    from dspex.testing._server import SimulatedLM

__all__ = ["BatchStore", "batches_routes"]

CHAT_ENDPOINT = "/v1/chat/completions"
_WINDOWS = frozenset({"24h"})
_WINDOW_S = 24 * 3600
_METADATA_KEYS = 16
_METADATA_KEY_CHARS = 64
_METADATA_VALUE_CHARS = 512
_LIST_DEFAULT, _LIST_MAX = 20, 100
_YIELD_EVERY = 200  # requests answered between yields, so a big batch does not stall other requests
_HOLD_POLL_S = 0.05  # how often a held batch looks whether the hold is off
_FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(slots=True)
class _Request:
    custom_id: str
    body: dict[str, Any]


@dataclass(slots=True)
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "validating"
    times: dict[str, int | None] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def mark(self, status: str) -> None:
        self.status = status
        self.times[f"{status}_at"] = int(time.time())

    def as_object(self) -> dict[str, Any]:
        stamps = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + _WINDOW_S,
            **{f"{stamp}_at": self.times.get(f"{stamp}_at") for stamp in stamps},
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
        }


class _Invalid(Exception):
    """The input file is not a batch this server runs; the batch fails with these errors."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"])
        self.errors = errors


def _invalid(message: str, line: int | None = None, code: str = "invalid_request") -> _Invalid:
    return _Invalid([{"code": code, "message": message, "param": None, "line": line}])


class BatchStore:
    """The batches of one simulated LM and the tasks running them."""

    def __init__(self, sim: SimulatedLM) -> None:
        self.sim = sim
        self._batches: dict[str, _Batch] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._run = os.urandom(4).hex()
        self._answered: set[str] = set()  # request hashes answered 200 by any batch so far

    def get(self, batch_id: str) -> _Batch | None:
        """The batch ``batch_id``, or None."""
        return self._batches.get(batch_id)

    def create(self, body: dict[str, Any]) -> _Batch:
        """Start a batch; FileRejected for a request the API refuses outright (a 400/404)."""
        file_id = str(body.get("input_file_id"))
        stored = self.sim.files.get(file_id)
        if stored is None:
            raise FileRejected(f"No such File object: {file_id}", 404)
        if stored.purpose != "batch":
            raise FileRejected(f"file {file_id} has purpose {stored.purpose!r}; a batch needs 'batch'")
        endpoint = body.get("endpoint")
        if endpoint != CHAT_ENDPOINT:
            raise FileRejected(f"`endpoint` must be {CHAT_ENDPOINT!r} (the simulation batches chat only)")
        window = body.get("completion_window", "24h")
        if window not in _WINDOWS:
            raise FileRejected(f"`completion_window` must be one of {sorted(_WINDOWS)}")
        metadata = _check_metadata(body.get("metadata"))
        batch = _Batch(f"batch_sim{self._run}{next(self._ids):08d}", file_id, endpoint, window, metadata)
        self._batches[batch.id] = batch
        self.sim.batch_counts["created"] += 1
        runner = asyncio.get_running_loop().create_task(self._execute(batch), name=f"sim-{batch.id}")
        self._running.add(runner)
        runner.add_done_callback(self._running.discard)
        return batch

    def listing(self, limit: int, after: str | None) -> tuple[list[_Batch], bool]:
        """A page of batches, newest first, starting after the batch ``after``; and whether more follow."""
        return page_after(list(self._batches.values()), list(self._batches), limit, after)

    def request_cancel(self, batch: _Batch) -> None:
        """Cancel ``batch`` if it has not started finalizing."""
        if batch.status in ("validating", "in_progress"):
            batch.mark("cancelling")
            batch.cancel.set()

    # ---- running a batch ---------------------------------------------------------------------
    async def _execute(self, batch: _Batch) -> None:
        await asyncio.sleep(0)  # answered "validating" first, as a provider does
        try:
            requests = self._parse(batch)
        except _Invalid as exc:
            batch.errors = exc.errors
            batch.mark("failed")
            self.sim.batch_counts["failed_batches"] += 1
            return
        batch.counts["total"] = len(requests)
        if batch.status == "validating":
            batch.mark("in_progress")
        share, ending = await self._wait(batch)
        if ending == "completed":
            batch.mark("finalizing")
        answered = math.floor(len(requests) * share + 1e-9)
        await self._finish(batch, requests[:answered], requests[answered:], ending)
        batch.mark(ending)

    def _parse(self, batch: _Batch) -> list[_Request]:
        stored = self.sim.files.get(batch.input_file_id)
        if stored is None:
            raise _invalid(f"the input file {batch.input_file_id} was deleted")
        config = self.sim.config
        if len(stored.data) > config.batch_max_bytes:
            raise _invalid(
                f"the input file has {len(stored.data)} bytes; a batch takes at most "
                f"{config.batch_max_bytes}",
                code="file_too_large",
            )
        lines = [line for line in stored.data.splitlines() if line.strip()]
        if not lines:
            raise _invalid("the input file is empty", code="empty_file")
        if len(lines) > config.batch_max_requests:
            raise _invalid(
                f"the input file has {len(lines)} requests; a batch takes at most "
                f"{config.batch_max_requests}",
                code="too_many_requests",
            )
        seen: set[str] = set()
        requests = [_parse_line(raw, number, batch.endpoint, seen) for number, raw in enumerate(lines, 1)]
        return requests

    async def _wait(self, batch: _Batch) -> tuple[float, str]:
        """(share of requests answered, final status) once the batch's time is up or it is cancelled."""
        config = self.sim.config
        delay, expire = config.batch_delay, config.batch_expire_after
        budget = delay if expire is None else min(delay, expire)
        started = time.monotonic()
        if budget > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(batch.cancel.wait(), budget)
        while self.sim.config.batch_hold and not batch.cancel.is_set():
            await asyncio.sleep(_HOLD_POLL_S)
        elapsed = time.monotonic() - started
        if batch.cancel.is_set():
            return (min(1.0, elapsed / delay) if delay > 0 else 0.0), "cancelled"
        if expire is not None and expire < delay:
            return expire / delay, "expired"
        return 1.0, "completed"

    async def _finish(self, batch: _Batch, done: list[_Request], left: list[_Request], ending: str) -> None:
        output: list[bytes] = []
        errors: list[bytes] = []
        for index, request in enumerate(done):
            if index and index % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            line, ok = self._answer(batch, request)
            (output if ok else errors).append(line)
        code = "batch_expired" if ending == "expired" else "batch_cancelled"
        message = (
            "This request could not be executed before the completion window expired."
            if ending == "expired"
            else "This request was not executed: its batch was cancelled."
        )
        for request in left:
            errors.append(_line(batch, request, None, {"code": code, "message": message}))
        if left:
            self.sim.batch_counts[f"requests_{ending}"] += len(left)
        batch.counts["completed"] = len(output)
        batch.counts["failed"] = len(errors)
        try:
            if output:
                batch.output_file_id = self._store(batch, "output", output)
            if errors:
                batch.error_file_id = self._store(batch, "error", errors)
        except FileRejected as exc:
            batch.errors = [{"code": "output_too_large", "message": str(exc), "param": None, "line": None}]

    def _store(self, batch: _Batch, kind: str, lines: list[bytes]) -> str:
        data = b"\n".join(lines) + b"\n"
        return self.sim.files.add(data, filename=f"{batch.id}_{kind}.jsonl", purpose="batch_output").id

    def _answer(self, batch: _Batch, request: _Request) -> tuple[bytes, bool]:
        """The output line for ``request`` and whether it was answered (200)."""
        sim, config, body = self.sim, self.sim.config, request.body
        rejected = err.check_chat_body(body) or sim.model_error(body.get("model"))
        if rejected is None and body.get("stream"):
            rejected = err.bad_request("`stream` is not supported in a batch")
        if rejected is None and config.batch_fail and sim.draw() < config.batch_fail:
            rejected = err.server_error()
        if rejected is not None:
            sim.batch_counts["requests_failed"] += 1
            error_body = json.loads(rejected.body) if isinstance(rejected.body, bytes) else {}
            response = {"status_code": rejected.status, "request_id": _request_id(body), "body": error_body}
            return _line(batch, request, response, None), False
        done = sim.complete(body)
        counts = sim.batch_counts
        counts["requests_ok"] += 1
        counts["prompt_tokens"] += done.prompt_tokens
        counts["completion_tokens"] += done.completion_tokens
        if done.request_hash in self._answered:
            counts["repeated"] += 1
        self._answered.add(done.request_hash)
        response = {"status_code": 200, "request_id": f"req_{done.request_hash[:24]}", "body": done.payload}
        return _line(batch, request, response, None), True


def _request_id(body: dict[str, Any]) -> str:
    try:
        return f"req_{request_hash(body)[:24]}"
    except (TypeError, ValueError):  # a body the content id cannot hash (it failed validation anyway)
        return "req_invalid"


def _line(
    batch: _Batch, request: _Request, response: dict[str, Any] | None, error: dict[str, Any] | None
) -> bytes:
    entry = {
        "id": f"batch_req_{batch.id.removeprefix('batch_')}_{request.custom_id}",
        "custom_id": request.custom_id,
        "response": response,
        "error": error,
    }
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _parse_line(raw: bytes, number: int, endpoint: str, seen: set[str]) -> _Request:
    try:
        entry = json.loads(raw)
    except ValueError as exc:
        raise _invalid(f"line {number} is not valid JSON: {exc}", number, "invalid_json_line") from exc
    if not isinstance(entry, dict):
        raise _invalid(f"line {number} is not a JSON object", number)
    custom_id = entry.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _invalid(f"line {number} has no `custom_id` string", number, "missing_required_parameter")
    if custom_id in seen:
        raise _invalid(f"line {number} repeats custom_id {custom_id!r}", number, "duplicate_custom_id")
    seen.add(custom_id)
    if entry.get("method") != "POST" or entry.get("url") != endpoint:
        raise _invalid(
            f"line {number} must be a POST to {endpoint}, the batch's endpoint", number, "invalid_url"
        )
    if not isinstance(entry.get("body"), dict):
        raise _invalid(f"line {number} has no `body` object", number, "missing_required_parameter")
    return _Request(custom_id, entry["body"])


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > _METADATA_KEYS:
        raise FileRejected(f"`metadata` must be an object of at most {_METADATA_KEYS} keys")
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > _METADATA_KEY_CHARS or len(value) > _METADATA_VALUE_CHARS:
            raise FileRejected(
                f"`metadata` keys have at most {_METADATA_KEY_CHARS} characters and values are strings "
                f"of at most {_METADATA_VALUE_CHARS}"
            )
    return dict(metadata)


def batches_routes(sim: SimulatedLM) -> list[web.RouteDef]:
    """The ``/v1/batches`` routes bound to ``sim`` (its ``batches`` store)."""

    def batch_named(request: web.Request) -> _Batch | web.Response:
        return found(request, "batch_id", sim.batches.get, "Batch object")

    async def create(request: web.Request) -> web.Response:
        body = await err.read_json(request)
        if isinstance(body, web.Response):
            return body
        try:
            batch = sim.batches.create(body)
        except FileRejected as exc:
            return err.not_found(str(exc)) if exc.status == 404 else err.bad_request(str(exc))
        return web.json_response(batch.as_object())

    async def retrieve(request: web.Request) -> web.Response:
        batch = batch_named(request)
        return batch if isinstance(batch, web.Response) else web.json_response(batch.as_object())

    async def listing(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", _LIST_DEFAULT))
        except ValueError:
            return err.bad_request("`limit` must be an integer")
        if not 1 <= limit <= _LIST_MAX:
            return err.bad_request(f"`limit` must be between 1 and {_LIST_MAX}")
        page, more = sim.batches.listing(limit, request.query.get("after"))
        data = [b.as_object() for b in page]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return web.json_response(
            {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}
        )

    async def cancel(request: web.Request) -> web.Response:
        batch = batch_named(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.status in _FINISHED:
            return err.bad_request(f"Cannot cancel a batch with status {batch.status!r}")
        sim.batches.request_cancel(batch)
        return web.json_response(batch.as_object())

    return gated(
        sim,
        "batches",
        [
            web.post("/v1/batches", create),
            web.get("/v1/batches", listing),
            web.get("/v1/batches/{batch_id}", retrieve),
            web.post("/v1/batches/{batch_id}/cancel", cancel),
        ],
    )
