"""A small scripted OpenAI-compatible HTTP server for the LM client's integration tests.

The project's simulated LM (dspex.testing) is the server for everything else; this one exists because
these tests need exact scripts (five 429s, then a 200 with known usage) and to see each request's
headers. It is a real aiohttp server on loopback: the client under test goes through its real
transport.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Reply", "ScriptedServer", "Seen", "start"]


@dataclass
class Reply:
    """One scripted answer. ``hang`` makes the server wait until the test ends (a timeout)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    hang: bool = False


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class ScriptedServer:
    """Answers from ``script`` in order, then 200s; counts requests and the usage it reported."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self.reported_prompt_tokens = 0
        self.reported_completion_tokens = 0
        self.release = asyncio.Event()
        self.base_url = ""

    @property
    def count(self) -> int:
        return len(self.seen)

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        # Usage varies with the request so that a wrong sum cannot pass by accident.
        prompt = 7 + len(str(body.get("messages")))
        completion = 3 + len(self.seen) % 5
        self.reported_prompt_tokens += prompt
        self.reported_completion_tokens += completion
        return {
            "id": f"cmpl-{len(self.seen)}",
            "model": body.get("model"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(Seen(request.path, body, dict(request.headers)))
        reply = self.script.pop(0) if self.script else Reply()
        if reply.hang:
            await self.release.wait()
        if reply.status == 200 and reply.json is None:
            payload = self.embeddings(body) if request.path.endswith("/embeddings") else self.completion(body)
            return web.json_response(payload)
        return web.json_response(reply.json or {}, status=reply.status, headers=reply.headers)

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = body["input"]
        vectors = [{"index": i, "embedding": [float(len(text)), float(i)]} for i, text in enumerate(texts)]
        return {"data": list(reversed(vectors)), "usage": {"prompt_tokens": len(body["input"])}}


async def start(scripted: ScriptedServer) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", scripted.handle)
    app.router.add_post("/v1/embeddings", scripted.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    scripted.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    return runner
