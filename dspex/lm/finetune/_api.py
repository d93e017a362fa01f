"""The OpenAI files and fine-tuning HTTP API, as any compatible endpoint serves it.

``POST /files`` (multipart: ``purpose``, ``file``), ``DELETE /files/{id}``, ``POST /fine_tuning/jobs``,
``GET /fine_tuning/jobs/{id}``, ``GET /fine_tuning/jobs?limit&after``, ``GET
/fine_tuning/jobs/{id}/events?limit``, ``POST /fine_tuning/jobs/{id}/cancel``. Reads are retried
like LM calls (transient errors, 429s); writes are sent once, so a lost answer never starts a second
job (the provider finds a job it started by its metadata instead, see :mod:`.openai`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from dspex.errors import LMConnectionError, LMServerError, LMTimeoutError
from dspex.lm.finetune.provider import Endpoint
from dspex.lm.retry import RetryPolicy, error_for_status, with_retries

__all__ = ["FinetuneAPI"]

_READ_POLICY = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=10.0)


class FinetuneAPI:
    """Calls to one endpoint's files and fine-tuning API; every answer is a JSON object."""

    def __init__(self, endpoint: Endpoint, timeout: float = 120.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    async def upload(self, content: bytes, filename: str, purpose: str = "fine-tune") -> dict[str, Any]:
        """``POST /files``: the file object (``id``, ``bytes``, ``purpose``...)."""
        form = aiohttp.FormData()
        form.add_field("purpose", purpose)
        form.add_field("file", content, filename=filename, content_type="application/jsonl")
        return await self._send("POST", "/files", data=form)

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        return await self._send("DELETE", f"/files/{file_id}")

    async def create_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /fine_tuning/jobs``: the new job object."""
        return await self._send("POST", "/fine_tuning/jobs", json_body=body)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._read(f"/fine_tuning/jobs/{job_id}")

    async def jobs(self, limit: int = 100, after: str | None = None) -> dict[str, Any]:
        """One page of jobs, newest first: ``{"data": [...], "has_more": bool}``."""
        params = {"limit": str(limit), **({"after": after} if after else {})}
        return await self._read("/fine_tuning/jobs", params)

    async def events(self, job_id: str, limit: int = 20) -> dict[str, Any]:
        """The job's latest events, newest first."""
        return await self._read(f"/fine_tuning/jobs/{job_id}/events", {"limit": str(limit)})

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._send("POST", f"/fine_tuning/jobs/{job_id}/cancel")

    async def _read(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await with_retries(lambda: self._send("GET", path, params=params), _READ_POLICY)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        data: aiohttp.FormData | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        endpoint = self.endpoint
        url = endpoint.api_base + path
        headers = dict(endpoint.headers())
        headers.pop("Content-Type", None)  # aiohttp sets it (JSON, or multipart with its boundary)
        try:
            async with (
                asyncio.timeout(self.timeout),
                aiohttp.ClientSession() as session,
                session.request(
                    method, url, json=json_body, data=data, params=params, headers=headers,
                    allow_redirects=False,
                ) as response,
            ):  # fmt: skip
                status, raw = response.status, await response.read()
                response_headers = response.headers
        except TimeoutError as exc:
            raise LMTimeoutError(f"{method} {url}: no answer within {self.timeout}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise LMConnectionError(f"{method} {url}: could not reach the endpoint ({exc!r})") from exc
        text = raw.decode("utf-8", errors="replace")
        if status >= 400:
            raise error_for_status(
                status, text, response_headers, model=endpoint.model, api_base=endpoint.api_base,
                secret=endpoint.secret(),
            )  # fmt: skip
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise LMServerError(f"{method} {url} answered {status} with something other than a JSON object")
        return answer
