"""The one network read of the media types: an explicit, caller-asked download (``from_url``).

``get`` keeps the call shape of ``requests.get`` (``verify=``, ``timeout=``; the response has
``content``, ``headers`` and ``raise_for_status()``), so the media modules name it ``requests``
as DSPy's do and code that replaces ``<module>.requests.get`` (tests, sandboxes) keeps working.
Constructing or validating a value never comes here. A predictor runs programs inside
``media_fetches(allowed=False)`` unless started to allow them: program code that asks for a
download there gets a SecurityPolicyError, so a worker never fetches an image URL on its own.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlparse

import httpx

from dspex.errors import SecurityPolicyError

__all__ = ["data_uri", "get", "is_http_url", "is_remote_url", "media_fetches"]

_FETCHES_ALLOWED: ContextVar[bool] = ContextVar("dspex_media_fetches_allowed", default=True)


@contextmanager
def media_fetches(*, allowed: bool) -> Iterator[None]:
    """Within the block (and the tasks it starts), downloads of media URLs are ``allowed`` or refused."""
    token = _FETCHES_ALLOWED.set(allowed)
    try:
        yield
    finally:
        _FETCHES_ALLOWED.reset(token)


def get(url: str, *, verify: bool = True, timeout: float | None = 30.0) -> Any:
    """GET ``url`` following redirects; the response (call ``raise_for_status()`` on it).

    SecurityPolicyError inside ``media_fetches(allowed=False)`` (a worker not allowed to fetch).
    """
    if not _FETCHES_ALLOWED.get():
        raise SecurityPolicyError(
            f"this worker does not download media URLs ({url}): send the image or file as data "
            "(Image.from_path, bytes, a data URI), or start the worker allowing media fetches"
        )
    return httpx.get(url, verify=verify, timeout=timeout, follow_redirects=True)


def is_http_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL with a host."""
    try:
        parsed = urlparse(text)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def is_remote_url(text: str) -> bool:
    """Whether ``text`` is an http(s) or gs URL with a host (what an Image may keep as a reference)."""
    try:
        parsed = urlparse(text)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https", "gs") and bool(parsed.netloc)


def data_uri(mime_type: str, data: bytes) -> str:
    """``data:<mime>;base64,<data>``."""
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def guess_mime(path: str) -> str | None:
    """The MIME type a file name suggests, or None."""
    return mimetypes.guess_type(path)[0]
