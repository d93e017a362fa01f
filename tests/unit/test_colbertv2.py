"""ColBERTv2 against a search server of the test's own (a real HTTP server on loopback that ranks a
small corpus by shared words, answering as ColBERTv2 servers do)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

import dspex
from dspex.errors import ConfigurationError, RetrievalError

CORPUS = [
    "Hamlet is a tragedy written by William Shakespeare",
    "Macbeth is a tragedy about a Scottish general",
    "The Odyssey is an epic poem attributed to Homer",
    "Shakespeare was born in Stratford-upon-Avon",
]


class SearchServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.answer_override: tuple[int, bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/wiki"

    def rank(self, query: str, k: int) -> dict[str, Any]:
        words = set(query.lower().split())
        scored = sorted(CORPUS, key=lambda text: -len(words & set(text.lower().split())))
        topk = [{"text": text, "pid": CORPUS.index(text), "rank": i + 1} for i, text in enumerate(scored)]
        return {"query": query, "topk": topk[: k + 1]}  # one too many: the client keeps k


class _Handler(BaseHTTPRequestHandler):
    server: SearchServer

    def do_GET(self) -> None:
        params = {key: values[0] for key, values in parse_qs(urlparse(self.path).query).items()}
        self._answer("GET", params)

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self._answer("POST", json.loads(self.rfile.read(length)))

    def _answer(self, method: str, params: dict[str, Any]) -> None:
        self.server.requests.append((method, params))
        status, body = self.server.answer_override or (
            200,
            json.dumps(self.server.rank(str(params["query"]), int(params["k"]))).encode(),
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[SearchServer]:
    search = SearchServer()
    thread = threading.Thread(target=search.serve_forever, daemon=True)
    thread.start()
    yield search
    search.shutdown()
    search.server_close()


@pytest.mark.parametrize("post", [False, True])
def test_passages_come_back_ranked_with_long_text_and_k_of_them(server: SearchServer, post: bool) -> None:
    search = dspex.ColBERTv2(url=server.url, post_requests=post)
    passages = search("who wrote the tragedy Hamlet", k=2)
    assert [p.long_text for p in passages] == [CORPUS[0], CORPUS[1]]
    assert passages[0].pid == 0 and passages[0].text == passages[0]["long_text"]
    assert search("who wrote the tragedy Hamlet", k=2, simplify=True) == [CORPUS[0], CORPUS[1]]
    assert server.requests == [
        ("POST" if post else "GET", {"query": "who wrote the tragedy Hamlet", "k": 2 if post else "2"})
    ]


def test_a_repeated_query_is_answered_from_the_cache(server: SearchServer) -> None:
    search = dspex.ColBERTv2(url=server.url)
    first = search("Homer epic", k=1)
    assert search("Homer epic", k=1) == first and len(server.requests) == 1
    search("Homer epic", k=3)
    assert len(server.requests) == 2  # another k is another request


def test_retrieve_asks_the_configured_colbertv2(server: SearchServer) -> None:
    with dspex.context(rm=dspex.ColBERTv2(url=server.url)):
        found = dspex.Retrieve(k=1)("Shakespeare birthplace Stratford-upon-Avon")
    assert found.passages == [CORPUS[3]]


def test_port_is_appended_to_the_url() -> None:
    assert dspex.ColBERTv2(url="http://search.local", port=2017).url == "http://search.local:2017"


@pytest.mark.parametrize(
    ("status", "body", "named"),
    [
        (200, b'{"error": true, "message": "index not loaded"}', "returned an error: index not loaded"),
        (200, b'{"passages": []}', "without a topk list"),
        (200, b"<html>busy</html>", "not JSON"),
        (503, b"overloaded", "answered HTTP 503: overloaded"),
    ],
)
def test_a_bad_answer_is_a_retrieval_error_naming_the_server(
    server: SearchServer, status: int, body: bytes, named: str
) -> None:
    server.answer_override = (status, body)
    with pytest.raises(RetrievalError, match=named) as raised:
        dspex.ColBERTv2(url=server.url)("anything", k=3)
    assert server.url in str(raised.value) and isinstance(raised.value, ValueError)


def test_an_unreachable_server_and_a_k_over_the_limit_are_clear_errors() -> None:
    with pytest.raises(RetrievalError, match="could not be reached"):
        dspex.ColBERTv2(url="http://127.0.0.1:9", timeout=2)("anything", k=3)
    with pytest.raises(ConfigurationError, match="between 1 and 100"):
        dspex.ColBERTv2(url="http://127.0.0.1:9")("anything", k=101)


def test_dspys_import_path_reaches_it() -> None:
    from dspex.dsp.colbertv2 import ColBERTv2

    assert ColBERTv2 is dspex.ColBERTv2
