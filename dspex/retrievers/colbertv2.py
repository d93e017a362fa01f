"""``ColBERTv2``: DSPy's client for a ColBERTv2 search server, over HTTP.

    search = dspex.ColBERTv2(url="http://20.102.90.50:2017/wiki17_abstracts")
    passages = search("Who wrote Hamlet?", k=3)           # dotdicts: text, long_text, pid, score...
    texts = search("Who wrote Hamlet?", k=3, simplify=True)  # just the texts
    dspex.configure(rm=search)                              # what dspex.Retrieve(k=3) asks

As DSPy's: a GET of ``url?query=...&k=...`` (``post_requests=True``: a POST of ``{"query", "k"}``
as JSON) whose answer is ``{"topk": [{"text": ..., ...}, ...]}``; the first ``k`` passages come
back, each with ``long_text`` set to its ``text``; ``port`` is appended to ``url``; answers are kept
in ``dspex.cache`` (``request_cache``), so a repeated query is not sent again. What differs: every
failure is a :class:`~dspex.errors.RetrievalError` (a ValueError, as DSPy's error answers are)
naming the server and what it said: an HTTP error status, a server that cannot be reached or does
not answer within ``timeout`` seconds (DSPy: requests' own exceptions), an error answer, an answer
without ``topk``; ``k`` above 100 (the hosted server's limit) is refused for both methods (DSPy
checks it for GET only); POSTed answers get ``long_text`` too (DSPy's lack it, so ``simplify=True``
failed there).
"""

from __future__ import annotations

from typing import Any

import httpx

from dspex.errors import ConfigurationError, RetrievalError
from dspex.lm.request_cache import request_cache
from dspex.utils.dotdict import dotdict

__all__ = ["ColBERTv2"]

MAX_K = 100  # what the hosted ColBERTv2 servers answer at most


class ColBERTv2:
    """A ColBERTv2 search server at ``url`` (and ``port``, when given): see the module docs."""

    def __init__(
        self,
        url: str = "http://0.0.0.0",
        port: str | int | None = None,
        post_requests: bool = False,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.post_requests = post_requests
        self.url = f"{url}:{port}" if port else url
        self.timeout = timeout

    def __call__(self, query: str, k: int = 10, simplify: bool = False) -> list[str] | list[dotdict]:
        if not 1 <= k <= MAX_K:
            raise ConfigurationError(f"ColBERTv2: k must be between 1 and {MAX_K}, got {k}")
        method = "POST" if self.post_requests else "GET"
        passages = _search(url=self.url, query=query, k=k, method=method, timeout=self.timeout)
        if simplify:
            return [passage["long_text"] for passage in passages]
        return [dotdict(passage) for passage in passages]


@request_cache(ignored_args_for_cache_key=["timeout"])
def _search(*, url: str, query: str, k: int, method: str, timeout: float) -> list[dict[str, Any]]:
    """The server's first ``k`` passages for ``query``, each with ``long_text``."""
    payload: dict[str, str | int] = {"query": query, "k": k}
    try:
        if method == "POST":
            response = httpx.post(url, json=payload, timeout=timeout)
        else:
            response = httpx.get(url, params=payload, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RetrievalError(f"ColBERTv2 server {url} could not be reached: {exc}") from exc
    if response.is_error:
        raise RetrievalError(
            f"ColBERTv2 server {url} answered HTTP {response.status_code}: {response.text[:200]}"
        )
    try:
        body = response.json()
    except ValueError as exc:
        raise RetrievalError(f"ColBERTv2 server {url} answered something that is not JSON") from exc
    if not isinstance(body, dict):
        raise RetrievalError(f"ColBERTv2 server {url} answered a {type(body).__name__}, not an object")
    if body.get("error"):
        raise RetrievalError(f"ColBERTv2 server {url} returned an error: {body.get('message', 'no message')}")
    topk = body.get("topk")
    if not isinstance(topk, list) or not all(isinstance(p, dict) and "text" in p for p in topk):
        raise RetrievalError(f"ColBERTv2 server {url} answered without a topk list of passages with text")
    return [{**passage, "long_text": passage["text"]} for passage in topk[:k]]
