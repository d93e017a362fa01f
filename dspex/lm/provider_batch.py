"""A client of OpenAI's Batch API (``/v1/files`` + ``/v1/batches``): many chat requests at the batch price.

    client = ProviderBatchClient.for_lm(lm)
    requests = [BatchRequest(custom_id=h, body=body) for h, body in bodies.items()]
    for part in client.split(requests):                 # within the provider's limits
        batch = await client.submit(part)                 # finds the batch of a crashed earlier run
        batch = await client.wait(batch["id"])
        results = await client.results(batch)             # custom_id -> BatchResult

Submitting is resumable: every batch carries a deterministic ``metadata`` key (the content id of its
requests), and :meth:`ProviderBatchClient.submit` looks for a batch with that key (``GET
/v1/batches``) before uploading anything, so a process killed between creating a batch and
recording it submits nothing twice when it runs again. This is the provider's Batch API, not
``Module.batch`` (which runs a program on many inputs online).

The API key goes only into the ``Authorization`` header, never into a metadata value, a file or an
error.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from dspex.errors import ConfigurationError, LMConnectionError, LMError, LMServerError
from dspex.ids import content_id
from dspex.lm.retry import RetryPolicy, error_for_status, with_retries
from dspex.lm.transport import get_session

__all__ = [
    "BATCH_KEY_FIELD",
    "BATCH_PROVIDERS",
    "FINISHED",
    "BatchLimits",
    "BatchRequest",
    "BatchResult",
    "ProviderBatchClient",
    "batch_key",
    "check_batch_provider",
]

CHAT_ENDPOINT = "/v1/chat/completions"
BATCH_KEY_FIELD = "dspex_batch_key"
"""The ``metadata`` field that names a batch by its requests (see :func:`batch_key`)."""
BATCH_PROVIDERS = frozenset({"openai"})
"""Providers (the ``provider/`` part of an LM's model) whose endpoint speaks OpenAI's Batch API."""
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
_LIST_PAGE = 100
_UNUSABLE = frozenset({"failed", "cancelled", "cancelling"})  # a batch by the same key is made anew
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class BatchLimits:
    """What one batch may hold (OpenAI's: 50,000 requests, a 200 MB input file)."""

    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ConfigurationError("batch limits must be >= 1 request and >= 1 byte")


@dataclass(frozen=True)
class BatchRequest:
    """One chat request of a batch: its ``custom_id`` (unique in the batch) and its request body."""

    custom_id: str
    body: Mapping[str, Any]

    def line(self) -> bytes:
        """The request as a line of the batch's input file."""
        entry = {"custom_id": self.custom_id, "method": "POST", "url": CHAT_ENDPOINT, "body": self.body}
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one request: the chat completion (``body``) or the provider's error text."""

    custom_id: str
    status: int | None
    body: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body is not None

    @property
    def retryable(self) -> bool:
        """Whether sending the request again may succeed (the batch expired, was cancelled, or a 5xx/429)."""
        return self.status is None or self.status == 429 or self.status >= 500


def check_batch_provider(model: str) -> None:
    """ConfigurationError unless ``model`` ('provider/name') is served by a provider with a Batch API."""
    provider = model.partition("/")[0]
    if provider not in BATCH_PROVIDERS:
        raise ConfigurationError(
            f"LM {model!r}: provider {provider!r} has no batch API dspex can use "
            f"(supported: {sorted(BATCH_PROVIDERS)}); run the job online"
        )


def batch_key(requests: Iterable[BatchRequest]) -> str:
    """The content id of the requests (custom ids and bodies, in any order): the batch's name."""
    return content_id(sorted((r.custom_id, content_id(dict(r.body))) for r in requests))


class ProviderBatchClient:
    """Files upload, batch create / find / poll / cancel, and result download for one endpoint."""

    def __init__(
        self,
        api_base: str,
        *,
        api_key_env: str | None = None,
        api_key: str | None = None,
        limits: BatchLimits | None = None,
        timeout: float = 120.0,
        retry_policy: RetryPolicy | None = None,
        name: str = "batch",
    ) -> None:
        """``api_base`` ends in ``/v1`` (as an LM's does); the key is read from ``api_key`` or
        ``api_key_env`` at each request."""
        self.api_base = api_base.rstrip("/")
        self.api_key_env = api_key_env
        self._api_key = api_key
        self.limits = limits or BatchLimits()
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._policy = retry_policy or RetryPolicy()
        self._name = name

    @classmethod
    def for_lm(cls, lm: Any, *, limits: BatchLimits | None = None) -> ProviderBatchClient:
        """The batch client of ``lm``'s endpoint; ConfigurationError for a provider without a Batch API."""
        check_batch_provider(str(lm.model))
        return cls(lm.api_base, api_key_env=lm.api_key_env, limits=limits, timeout=lm.timeout, name=lm.model)

    # ---- limits ------------------------------------------------------------------------------
    def split(self, requests: Sequence[BatchRequest]) -> list[list[BatchRequest]]:
        """``requests`` in consecutive parts within the limits; ConfigurationError for a request that
        alone is over the byte limit (nothing is submitted then)."""
        parts: list[list[BatchRequest]] = []
        current: list[BatchRequest] = []
        size = 0
        for request in requests:
            length = len(request.line())
            if length > self.limits.max_bytes:
                raise ConfigurationError(
                    f"request {request.custom_id} is {length} bytes; a batch file takes at most "
                    f"{self.limits.max_bytes}"
                )
            if current and (
                len(current) >= self.limits.max_requests or size + length > self.limits.max_bytes
            ):
                parts.append(current)
                current, size = [], 0
            current.append(request)
            size += length
        if current:
            parts.append(current)
        return parts

    # ---- batches -----------------------------------------------------------------------------
    async def submit(self, requests: Sequence[BatchRequest], *, key: str | None = None) -> dict[str, Any]:
        """The batch for ``requests``: an earlier one with the same key that did not fail, else a new
        one (file uploaded, batch created with ``metadata[BATCH_KEY_FIELD] = key``)."""
        if not requests:
            raise ConfigurationError("a batch needs at least one request")
        if len(self.split(requests)) > 1:
            raise ConfigurationError(
                f"{len(requests)} requests are over one batch's limits ({self.limits}); split() them first"
            )
        name = key or batch_key(requests)
        uploaded: list[str] = []

        async def attempt() -> dict[str, Any]:
            # Looked for again before every try: a create whose answer was lost may have worked.
            found = await self.find(name)
            if found is not None and found["status"] not in _UNUSABLE:
                return found
            if not uploaded:
                data = b"".join(request.line() for request in requests)
                uploaded.append(await self.upload(data, filename=f"dspex-{name[:16]}.jsonl"))
            body = {
                "input_file_id": uploaded[0],
                "endpoint": CHAT_ENDPOINT,
                "completion_window": "24h",
                "metadata": {BATCH_KEY_FIELD: name},
            }
            return _as_object(await self._once("POST", "/batches", body, None, None), "/batches")

        return await with_retries(attempt, self._policy)

    async def find(self, key: str, *, max_pages: int = 20) -> dict[str, Any] | None:
        """The newest batch whose metadata key is ``key`` (among the newest ``max_pages`` pages)."""
        after: str | None = None
        for _ in range(max_pages):
            params = {"limit": str(_LIST_PAGE), **({"after": after} if after else {})}
            page = await self._json("GET", "/batches", params=params)
            for batch in page.get("data") or []:
                if (batch.get("metadata") or {}).get(BATCH_KEY_FIELD) == key:
                    return dict(batch)
            after = page.get("last_id")
            if not page.get("has_more") or after is None:
                return None
        return None

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        """The batch object now."""
        return await self._json("GET", f"/batches/{batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        """Ask the provider to stop the batch."""
        return await self._json("POST", f"/batches/{batch_id}/cancel")

    async def wait(
        self, batch_id: str, *, poll_s: float = 5.0, timeout: float | None = None
    ) -> dict[str, Any]:
        """Poll until the batch finished (completed, failed, expired or cancelled)."""
        async with asyncio.timeout(timeout):
            while True:
                batch = await self.retrieve(batch_id)
                if batch.get("status") in FINISHED:
                    return batch
                await asyncio.sleep(poll_s)

    async def results(self, batch: Mapping[str, Any]) -> dict[str, BatchResult]:
        """custom_id -> result, from a finished batch's output and error files."""
        found: dict[str, BatchResult] = {}
        for field in ("output_file_id", "error_file_id"):
            file_id = batch.get(field)
            if file_id:
                for line in (await self.download(str(file_id))).splitlines():
                    if line.strip():
                        result = _parse_result(line)
                        if result is not None:
                            found[result.custom_id] = result
        return found

    async def complete_online(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The online endpoint's answer to one request (``POST /chat/completions``), with retries."""
        answer = await self._json("POST", "/chat/completions", json_body=body)
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices:
            raise LMServerError(f"{self._name} at {self.api_base}: answered 200 without choices", status=200)
        return answer

    # ---- files -------------------------------------------------------------------------------
    async def upload(self, data: bytes, *, filename: str, purpose: str = "batch") -> str:
        """Upload a file; its id."""

        def form() -> aiohttp.FormData:  # a new one per attempt: a sent form cannot be sent again
            made = aiohttp.FormData()
            made.add_field("purpose", purpose)
            made.add_field("file", data, filename=filename, content_type="application/jsonl")
            return made

        stored = await self._json("POST", "/files", form=form)
        return str(stored["id"])

    async def download(self, file_id: str) -> bytes:
        """A file's content."""
        return await self._request("GET", f"/files/{file_id}/content")

    async def delete_file(self, file_id: str) -> None:
        """Delete a file (input files are not needed once their batch finished)."""
        await self._request("DELETE", f"/files/{file_id}")

    # ---- HTTP --------------------------------------------------------------------------------
    async def _json(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        form: Any = None,
    ) -> dict[str, Any]:
        raw = await self._request(method, path, json_body=json_body, params=params, form=form)
        return _as_object(raw, f"{self.api_base}{path}")

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        form: Any = None,
    ) -> bytes:
        async def attempt() -> bytes:
            return await self._once(method, path, json_body, params, form)

        return await with_retries(attempt, self._policy)

    async def _once(
        self,
        method: str,
        path: str,
        json_body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        form: Any,
    ) -> bytes:
        session = await get_session()
        url = self.api_base + path
        headers = self._headers(json_body is not None)
        data = form() if form is not None else None
        try:
            async with session.request(
                method, url, json=json_body, data=data, params=params, headers=headers, timeout=self._timeout
            ) as response:
                status, raw = response.status, await response.read()
                if status >= 400:
                    raise error_for_status(
                        status,
                        raw.decode("utf-8", errors="replace"),
                        response.headers,
                        model=self._name,
                        api_base=self.api_base,
                        secret=self._key(),
                    )
                return raw
        except LMError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise LMConnectionError(
                f"{self._name} at {self.api_base}: {method} {path} failed ({exc!r})"
            ) from exc

    def _key(self) -> str | None:
        if self._api_key is not None:
            return self._api_key
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def _headers(self, with_json: bool) -> dict[str, str]:
        key = self._key()
        headers = dict(_JSON) if with_json else {}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers


def _as_object(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise LMServerError(f"{where} answered 200 with a body that is not JSON") from exc
    if not isinstance(data, dict):
        raise LMServerError(f"{where} answered 200 with JSON that is not an object")
    return data


def _parse_result(line: bytes) -> BatchResult | None:
    """One line of an output or error file; a malformed line (no custom_id) is None."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("custom_id"), str):
        return None
    custom_id = entry["custom_id"]
    response = entry.get("response")
    error = entry.get("error")
    if isinstance(response, dict):
        status = response.get("status_code")
        body = response.get("body")
        if (
            status == 200
            and isinstance(body, dict)
            and isinstance(body.get("choices"), list)
            and body["choices"]
        ):
            return BatchResult(custom_id, 200, body)
        message = _error_text(body) or f"HTTP {status} without a chat completion"
        return BatchResult(
            custom_id, status if isinstance(status, int) and status != 200 else 500, None, message
        )
    if isinstance(error, dict):
        return BatchResult(custom_id, None, None, f"{error.get('code')}: {error.get('message')}")
    return BatchResult(custom_id, 500, None, "a result line with neither a response nor an error")


def _error_text(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or body["error"])
    return None
