"""The simulated LM's Files API, shaped like OpenAI's ``/v1/files`` (a simulation; files live in memory).

- ``POST /v1/files`` (multipart: ``file`` and ``purpose``) stores a file and answers its object;
- ``GET /v1/files`` (``?purpose=``) lists them, newest first;
- ``GET /v1/files/{id}`` answers one file's object, ``GET /v1/files/{id}/content`` its bytes;
- ``DELETE /v1/files/{id}`` forgets it.

Other handler modules (batches, fine-tuning) reach the store as ``sim.files`` (a :class:`FileStore`):
``sim.files.add(data, filename=..., purpose=...)`` stores a file they produce (purposes such as
``batch_output`` that a client may not upload), ``sim.files.get(file_id)`` reads one. The store keeps
at most ``file_max_bytes`` per file and ``files_max_bytes`` in all (the server's knobs); beyond
either an upload is refused with a 413 and nothing is stored.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import BodyPartReader, web

from dspex.testing import _errors as err

if TYPE_CHECKING:
    from dspex.testing._server import SimulatedLM

__all__ = [
    "UPLOAD_PURPOSES",
    "FileRejected",
    "FileStore",
    "StoredFile",
    "files_routes",
    "found",
    "gated",
    "page_after",
]

# What a client may upload (OpenAI's list); the server's own outputs use other purposes.
UPLOAD_PURPOSES = frozenset({"batch", "fine-tune", "assistants", "vision", "user_data", "evals"})
_READ_CHUNK = 1 << 16


_Listed = TypeVar("_Listed")
_Found = TypeVar("_Found")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page_after(
    oldest_first: Sequence[_Listed], ids: Sequence[str], limit: int, after: str | None
) -> tuple[list[_Listed], bool]:
    """One page of a listing as OpenAI's list endpoints give it: newest first, starting after the
    object ``after`` (nothing when no such object), at most ``limit``; and whether more follow.
    ``ids`` are the objects' ids, in the same order."""
    newest_first, newest_ids = list(oldest_first)[::-1], list(ids)[::-1]
    if after is not None:
        newest_first = newest_first[newest_ids.index(after) + 1 :] if after in newest_ids else []
    return newest_first[:limit], len(newest_first) > limit


def gated(sim: SimulatedLM, path: str, routes: Sequence[web.RouteDef]) -> list[web.RouteDef]:
    """``routes`` with every handler behind ``sim.gate``: counted under ``path``, and answered by
    the outage or the missing key before the handler runs (the files, batches and fine-tuning APIs)."""
    return [
        web.route(route.method, route.path, _behind_gate(sim, path, route.handler), **route.kwargs)
        for route in routes
    ]


def _behind_gate(sim: SimulatedLM, path: str, handler: _Handler) -> _Handler:
    async def gated_handler(request: web.Request) -> web.StreamResponse:
        rejected = sim.gate(request, path)
        return rejected if rejected is not None else await handler(request)

    return gated_handler


def found(
    request: web.Request, key: str, get: Callable[[str], _Found | None], what: str
) -> _Found | web.Response:
    """The object the URL's ``key`` part names (``get(id)``), or the 404 "No such WHAT: id"."""
    object_id = request.match_info[key]
    stored = get(object_id)
    return err.not_found(f"No such {what}: {object_id}") if stored is None else stored


class FileRejected(Exception):
    """A file the store will not take; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class StoredFile:
    """One stored file: its bytes and OpenAI's file object fields."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def as_object(self) -> dict[str, Any]:
        """OpenAI's file object (no content)."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


class FileStore:
    """The files of one simulated LM, in memory, within a per-file and a total byte limit."""

    def __init__(self, limits: Callable[[], tuple[int, int]]) -> None:
        """``limits()``: the bytes allowed per file and in all, read at each upload (knobs change)."""
        self._limits = limits
        self._files: dict[str, StoredFile] = {}
        self._bytes = 0
        self._ids = itertools.count(1)
        self._run = os.urandom(4).hex()  # ids differ between server runs, like a provider's
        self.uploaded = self.deleted = 0

    @property
    def total_bytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def check_room(self, size: int) -> None:
        """FileRejected (413) when a file of ``size`` bytes would not fit."""
        per_file, total = self._limits()
        if size > per_file:
            raise FileRejected(f"the file is over the limit of {per_file} bytes per file", 413)
        if self._bytes + size > total:
            raise FileRejected(
                f"storing {size} more bytes would exceed the store's {total} bytes "
                f"({self._bytes} held); delete files first",
                413,
            )

    def add(self, data: bytes, *, filename: str, purpose: str) -> StoredFile:
        """Store ``data``; FileRejected when it does not fit."""
        self.check_room(len(data))
        stored = StoredFile(f"file-sim{self._run}{next(self._ids):08d}", filename, purpose, data)
        self._files[stored.id] = stored
        self._bytes += len(data)
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """The file ``file_id``, or None."""
        return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        """Forget ``file_id``; False when there is no such file."""
        stored = self._files.pop(file_id, None)
        if stored is None:
            return False
        self._bytes -= len(stored.data)
        self.deleted += 1
        return True

    def listing(self, purpose: str | None = None) -> list[StoredFile]:
        """The files (of ``purpose``, if given), newest first."""
        chosen = [f for f in self._files.values() if purpose is None or f.purpose == purpose]
        return chosen[::-1]

    def stats(self) -> dict[str, int]:
        """Counters for ``GET /admin/stats``."""
        return {
            "files": len(self._files),
            "bytes": self._bytes,
            "uploaded": self.uploaded,
            "deleted": self.deleted,
        }


async def _read_part(part: BodyPartReader, store: FileStore) -> bytes:
    """The part's bytes, refused (413) as soon as they outgrow the store's limits."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_READ_CHUNK):
        size += len(chunk)
        store.check_room(size)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_upload(request: web.Request, store: FileStore) -> tuple[bytes, str, str]:
    """(content, filename, purpose) of a multipart upload; FileRejected for anything else."""
    if not request.content_type.startswith("multipart/"):
        raise FileRejected("upload the file as multipart/form-data with fields `file` and `purpose`")
    reader = await request.multipart()
    data: bytes | None = None
    filename, purpose = "upload.jsonl", None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise FileRejected("nested multipart bodies are not supported")
        if part.name == "file":
            filename = part.filename or filename
            data = await _read_part(part, store)
        elif part.name == "purpose":
            purpose = (await part.text()).strip()
    if data is None:
        raise FileRejected("the multipart body has no `file` field")
    if purpose not in UPLOAD_PURPOSES:
        raise FileRejected(f"`purpose` must be one of {sorted(UPLOAD_PURPOSES)}, got {purpose!r}")
    return data, filename, purpose


def files_routes(sim: SimulatedLM) -> list[web.RouteDef]:
    """The ``/v1/files`` routes bound to ``sim`` (its ``files`` store)."""

    def stored_file(request: web.Request) -> StoredFile | web.Response:
        return found(request, "file_id", sim.files.get, "File object")

    async def upload(request: web.Request) -> web.Response:
        try:
            data, filename, purpose = await _read_upload(request, sim.files)
            stored = sim.files.add(data, filename=filename, purpose=purpose)
        except FileRejected as exc:
            return err.bad_request(str(exc)) if exc.status == 400 else err.too_large(str(exc))
        sim.files.uploaded += 1
        return web.json_response(stored.as_object())

    async def listing(request: web.Request) -> web.Response:
        files = sim.files.listing(request.query.get("purpose"))
        return web.json_response(
            {"object": "list", "data": [f.as_object() for f in files], "has_more": False}
        )

    async def retrieve(request: web.Request) -> web.Response:
        stored = stored_file(request)
        return stored if isinstance(stored, web.Response) else web.json_response(stored.as_object())

    async def content(request: web.Request) -> web.Response:
        stored = stored_file(request)
        if isinstance(stored, web.Response):
            return stored
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def delete(request: web.Request) -> web.Response:
        stored = stored_file(request)
        if isinstance(stored, web.Response):
            return stored
        sim.files.delete(stored.id)
        return web.json_response({"id": stored.id, "object": "file", "deleted": True})

    return gated(
        sim,
        "files",
        [
            web.post("/v1/files", upload),
            web.get("/v1/files", listing),
            web.get("/v1/files/{file_id}", retrieve),
            web.get("/v1/files/{file_id}/content", content),
            web.delete("/v1/files/{file_id}", delete),
        ],
    )
