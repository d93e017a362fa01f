"""The lean HTTP/1.1 client of the LM's JSON calls, against real sockets that answer byte by byte."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from lm_served import served_v1

from dspex.errors import LMConfigurationError, LMConnectionError, LMServerError, LMTimeoutError
from dspex.lm import LM
from dspex.lm.http1 import Http1Pool, HTTPProtocolError, ServerDisconnected, Target, target_of
from dspex.lm.transport import aclose_client, get_http1_pool

ANSWER = b'{"choices":[{"message":{"role":"assistant","content":"5"}}]}'
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


@dataclass
class Server:
    """What a scripted server saw: one entry per connection, the requests' raw heads and bodies."""

    url: str = ""
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    open_now: int = 0
    most_open: int = 0


async def read_request(reader: asyncio.StreamReader, server: Server) -> bool:
    """One request off the connection into ``server``; False at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    server.heads.append(head)
    server.bodies.append(await reader.readexactly(length))
    return True


def reply(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[Server]:
    """A TCP server on a free port running ``script`` for each connection."""
    server = Server()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        server.open_now += 1
        server.most_open = max(server.most_open, server.open_now)
        try:
            await script(reader, writer, server)
        finally:
            server.open_now -= 1
            writer.close()

    listening = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/v1/chat/completions?x=1"
    try:
        yield server
    finally:
        listening.close()
        await listening.wait_closed()


@asynccontextmanager
async def pool(limit: int = 16, keepalive_s: float = 30.0) -> AsyncIterator[Http1Pool]:
    made = Http1Pool(ssl.create_default_context(), limit=limit, keepalive_s=keepalive_s)
    try:
        yield made
    finally:
        made.close()
        await asyncio.sleep(0.01)  # let the transports finish closing


def target(url: str) -> Target:
    found = target_of(url)
    assert found is not None
    return found


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while await read_request(reader, server):
        writer.write(reply(ANSWER, "Content-Type: application/json"))


async def test_a_request_is_one_post_with_its_headers_and_the_connection_is_reused() -> None:
    async with scripted(keep_answering) as server, pool() as connections:
        for body in (b'{"a":1}', b'{"b":2}'):
            answer = await connections.post(target(server.url), b"X-Test: yes\r\n", body)
            assert (answer.status, answer.body) == (200, ANSWER)
    assert server.connections == 1
    assert server.bodies == [b'{"a":1}', b'{"b":2}']
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/chat/completions?x=1 HTTP/1.1\r\n")
    assert f"Host: {server.url.split('/')[2]}\r\n" in head
    assert "X-Test: yes\r\n" in head and "Content-Length: 7\r\n" in head
    assert "Accept-Encoding: gzip, deflate\r\n" in head


async def test_a_chunked_gzip_answer_sent_a_byte_at_a_time_is_read_whole() -> None:
    packed = gzip.compress(ANSWER)
    chunked = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in (packed[:10], packed[10:]))
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        + chunked
        + b"0\r\nX-Trailer: t\r\n\r\n"
    )

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server):
            for index in range(len(raw)):
                writer.write(raw[index : index + 1])
                await writer.drain()
                await asyncio.sleep(0)

    async with scripted(trickle) as server, pool() as connections:
        first = await connections.post(target(server.url), b"", b"{}")
        second = await connections.post(target(server.url), b"", b"{}")
    assert first.body == second.body == ANSWER
    assert first.headers["content-encoding"] == "gzip"
    assert server.connections == 1  # the whole chunked answer was consumed: reusable


async def test_an_interim_answer_is_skipped_and_connection_close_is_honoured() -> None:
    async def continue_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        if await read_request(reader, server):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(ANSWER, "Connection: close"))
            await writer.drain()

    async with scripted(continue_then_close) as server, pool() as connections:
        for _ in range(2):
            assert (await connections.post(target(server.url), b"", b"{}")).body == ANSWER
    assert server.connections == 2


async def test_an_answer_without_a_length_ends_with_the_connection() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        if await read_request(reader, server):
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json; charset=latin-1\r\n\r\n")
            writer.write(ANSWER)
            await writer.drain()

    async with scripted(until_close) as server, pool() as connections:
        answer = await connections.post(target(server.url), b"", b"{}")
    assert (answer.body, answer.charset) == (ANSWER, "latin-1")


async def test_a_server_that_drops_mid_answer_or_answers_garbage_is_a_connection_error() -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        if await read_request(reader, server):
            writer.write(reply(ANSWER)[:-5])
            await writer.drain()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        if await read_request(reader, server):
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(1)

    async with scripted(half) as server, pool() as connections:
        with pytest.raises(ServerDisconnected):
            await connections.post(target(server.url), b"", b"{}")
    async with scripted(garbage) as server, pool() as connections:
        with pytest.raises(HTTPProtocolError, match="not HTTP"):
            await connections.post(target(server.url), b"", b"{}")
    assert issubclass(HTTPProtocolError, ConnectionError) and issubclass(ServerDisconnected, ConnectionError)


async def test_an_idle_connection_the_server_closed_is_not_used_again() -> None:
    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        if await read_request(reader, server):
            writer.write(reply(ANSWER))  # keep-alive by default, then closes anyway
            await writer.drain()

    async with scripted(one_answer) as server, pool() as connections:
        assert (await connections.post(target(server.url), b"", b"{}")).body == ANSWER
        await asyncio.sleep(0.05)  # the close reaches the idle connection
        assert (await connections.post(target(server.url), b"", b"{}")).body == ANSWER
    assert server.connections == 2


async def test_a_cancelled_request_closes_its_connection_and_idle_ones_expire() -> None:
    async def slow_then_fast(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while await read_request(reader, server):
            if len(server.bodies) == 1:  # no answer: the client gives up and must close
                await reader.read()
                return
            writer.write(reply(ANSWER))

    async with scripted(slow_then_fast) as server, pool(keepalive_s=0.1) as connections:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await connections.post(target(server.url), b"", b"{}")
        assert (await connections.post(target(server.url), b"", b"{}")).body == ANSWER
        assert server.connections == 2  # not the cancelled one's
        await asyncio.sleep(0.35)  # idle past the keep-alive: swept
        assert server.open_now == 0


async def test_at_the_connection_limit_requests_wait_for_a_released_or_lost_connection() -> None:
    async def slowly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await read_request(reader, server):
            await asyncio.sleep(0.01)
            close = len(server.bodies) > 10  # the later answers close their connections
            writer.write(reply(ANSWER, "Connection: close" if close else "Connection: keep-alive"))
            await writer.drain()
            if close:
                return

    async with scripted(slowly) as server, pool(limit=2) as connections:
        answers = await asyncio.gather(*(connections.post(target(server.url), b"", b"{}") for _ in range(20)))
    assert [answer.body for answer in answers] == [ANSWER] * 20
    assert server.most_open <= 2
    assert server.connections < 20  # released connections were handed to the waiting requests


def test_urls_the_lean_client_leaves_to_aiohttp() -> None:
    assert target_of("ftp://host/x") is None
    assert target_of("http://user:secret@host/x") is None
    assert target_of("http://host:notaport/x") is None
    ipv6 = target("https://[::1]/v1/embeddings")
    assert ipv6.key == ("https", "::1", 443) and b"Host: [::1]\r\n" in ipv6.head_start
    assert target("http://Host:8080").head_start.startswith(b"POST / HTTP/1.1\r\nHost: Host:8080\r\n")


async def test_the_lm_maps_the_lean_clients_answers_and_failures_as_aiohttps() -> None:
    async def overloaded(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"message": "overloaded"}},
            status=503,
            headers={"Retry-After": "7", "x-request-id": "r1"},
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", overloaded)
    async with served_v1(app) as base:
        assert await get_http1_pool() is not None
        lm = LM("openai/test", api_base=base, cache=False, max_retries=0, api_key="sk-test")
        with pytest.raises(LMServerError, match="overloaded") as caught:
            await lm.acomplete([{"role": "user", "content": "hi"}])
    assert (caught.value.status, caught.value.retry_after, caught.value.request_id) == (503, 7.0, "r1")

    async with scripted(keep_answering) as server:
        port = server.url.split("/")[2]
    lm = LM("openai/test", api_base=f"http://{port}/v1", cache=False, max_retries=0)
    with pytest.raises(LMConnectionError, match=port):
        await lm.acomplete([{"role": "user", "content": "hi"}])
    await aclose_client()


async def test_dspex_lm_http_client_aiohttp_sends_through_the_aiohttp_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent", ""))
        return web.json_response(json.loads(ANSWER))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    async with served_v1(app) as base:
        lm = LM("openai/test", api_base=base, cache=False)
        await lm.acomplete([{"role": "user", "content": "hi"}])
        await aclose_client()
        monkeypatch.setenv("DSPEX_LM_HTTP_CLIENT", "aiohttp")
        assert await get_http1_pool() is None
        await lm.acomplete([{"role": "user", "content": "hi"}])
    assert seen[0].startswith("dspex/") and "aiohttp" in seen[1]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_https_verifies_the_server_with_the_pools_tls_context(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(cert, key)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader, Server()):
            writer.write(reply(ANSWER))
        writer.close()

    listening = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=serving)
    url = f"https://127.0.0.1:{listening.sockets[0].getsockname()[1]}/v1/chat/completions"
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        async with pool() as connections:  # the default store does not know this certificate
            with pytest.raises(ssl.SSLCertVerificationError):
                await connections.post(target(url), b"", b"{}")
        trusted = Http1Pool(trusting, limit=4, keepalive_s=30.0)
        try:
            for _ in range(2):
                assert (await trusted.post(target(url), b"", b"{}")).body == ANSWER
        finally:
            trusted.close()
            await asyncio.sleep(0.01)
    finally:
        listening.close()
        await listening.wait_closed()


async def test_the_lm_times_out_a_silent_server_and_refuses_a_key_with_a_line_break() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await read_request(reader, server)
        await reader.read()  # until the client gives up and closes

    async with scripted(silent) as server:
        base = server.url.split("/chat/")[0]
        lm = LM("openai/test", api_base=base, cache=False, max_retries=0, timeout=0.2)
        with pytest.raises(LMTimeoutError, match=r"no answer within 0.2s"):
            await lm.acomplete([{"role": "user", "content": "hi"}])
        injected = LM("openai/test", api_base=base, cache=False, api_key="sk-1\r\nX-Evil: 1")
        with pytest.raises(LMConfigurationError, match="line break"):
            await injected.acomplete([{"role": "user", "content": "hi"}])
        await aclose_client()
    assert len(server.heads) == 1  # the refused key sent nothing


def test_every_loop_shares_the_processs_one_tls_context() -> None:
    from dspex.lm import transport

    async def context_of_a_new_loop() -> object:
        resources = await transport.loop_resources()
        pool = resources.http1
        return None if pool is None else pool._tls  # what the pool connects with

    first, second = asyncio.run(context_of_a_new_loop()), asyncio.run(context_of_a_new_loop())
    assert transport._tls_context() is transport._tls_context()
    assert first is second is transport._tls_context()
