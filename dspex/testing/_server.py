"""The simulated LM's state and HTTP handlers (a simulation, not a real model).

Endpoints: ``POST /v1/chat/completions`` (DSPy ChatAdapter and JSONAdapter formats, see
:mod:`dspex.testing.task` for the arithmetic task and its accuracy model; native tool calls for
requests with ``tools``, see :mod:`dspex.testing._tools`; ``stream: true`` answers as server-sent
chunks, see :mod:`dspex.testing._stream`), ``POST /v1/embeddings``, ``GET /v1/models``,
``POST /v1/responses`` (OpenAI's Responses API over the same answers, see
:mod:`dspex.testing._responses`), OpenAI's
Files and Batch APIs (``/v1/files``, ``/v1/batches``: see :mod:`dspex.testing._files` and
:mod:`dspex.testing._batches`), OpenAI's fine-tuning API (``/v1/fine_tuning/jobs``, see
:mod:`dspex.testing._finetune`), and the admin endpoints a test drives it with: ``GET /admin/stats``,
``GET /admin/requests?limit=N``, ``GET|POST /admin/config``, ``POST /admin/hold`` (``{"after": N}``
lets N more requests through first), ``POST /admin/release``, ``POST /admin/down`` (``{"mode":
"503"|"drop"}``), ``POST /admin/up``, ``POST /admin/reset`` (zeroes counters and the request log).

Run it with ``dspex sim-lm`` or ``python -m dspex.testing.sim_lm --port 8000 --latency 0.1``; from
Python use :class:`dspex.testing.SimulatedLMServer`. Answers depend only on the request (content id
of model, messages, seed and temperature); the knobs below add latency and faults around them.
Faults are drawn from a random generator seeded with ``seed`` so a retried request can succeed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from dspex.errors import ConfigurationError
from dspex.testing import _errors as err
from dspex.testing._admin import admin_routes
from dspex.testing._batches import BatchStore, batches_routes
from dspex.testing._completion import Completion, build_completion
from dspex.testing._embed import DEFAULT_DIMENSIONS, embed
from dspex.testing._files import FileStore, files_routes
from dspex.testing._finetune import FinetuneStore, finetune_routes
from dspex.testing._responses import responses_routes
from dspex.testing._stream import DONE_EVENT, sse_event, stream_chunks

__all__ = ["DownMode", "SimLMConfig", "SimulatedLM", "make_app", "start_server"]

logger = logging.getLogger(__name__)

DownMode = Literal["503", "drop"]
_LOG_TEXT_CHARS = 160
# Answers are the hot path of a load test: compact JSON (json_response's default adds spaces), one
# encoder for all of them.
_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class SimLMConfig(BaseModel):
    """The simulated LM's knobs; every one can change at runtime through ``POST /admin/config``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency: float = Field(default=0.0, ge=0, description="seconds before each answer")
    jitter: float = Field(default=0.0, ge=0, description="latency varies uniformly by +- this many seconds")
    rate: float | None = Field(default=None, gt=0, description="requests/s cap (token bucket); 429 beyond it")
    burst: float | None = Field(
        default=None, ge=1, description="token bucket size; default one second of rate"
    )
    fail: float = Field(default=0.0, ge=0, le=1, description="fraction of requests answered with a 500")
    timeout_rate: float = Field(default=0.0, ge=0, le=1, description="fraction of requests that hang")
    hang_seconds: float = Field(default=300.0, ge=0, description="how long a hanging request hangs")
    require_api_key: SecretStr | None = Field(default=None, description="the Bearer key requests must carry")
    models: tuple[str, ...] | None = Field(default=None, description="known model names; others get a 404")
    down_after: int | None = Field(
        default=None, ge=0, description="go down (503) after this many more answers"
    )
    seed: int = Field(default=0, description="seeds the fault and jitter draws (answers never depend on it)")
    log_size: int = Field(default=10_000, ge=0, description="how many requests /admin/requests remembers")
    garble: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="fraction of answers in no adapter's format (from the request hash)",
    )
    garble_fields: str | None = Field(
        default=None,
        description="garble only answers to signatures with an output field name containing this",
    )
    code_abuse: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="fraction of RLM/ProgramOfThought code steps answered with code that abuses the sandbox",
    )
    code_abuse_port: int = Field(
        default=9, ge=1, le=65535, description="the loopback port the abusive network code fetches"
    )
    stream_delay: float = Field(
        default=0.0, ge=0, description="seconds between the chunks of a streamed answer (stream: true)"
    )
    stream_chunk_chars: int = Field(
        default=4, ge=1, description="characters of content or tool arguments per streamed chunk"
    )
    # Files and batches (dspex.testing._files, dspex.testing._batches)
    file_max_bytes: int = Field(default=200 * 2**20, ge=1, description="bytes per uploaded file at most")
    files_max_bytes: int = Field(default=2**31, ge=1, description="bytes all stored files may hold")
    batch_delay: float = Field(default=0.0, ge=0, description="seconds a batch stays in_progress")
    batch_hold: bool = Field(
        default=False, description="batches stay in_progress while set (a test holds the provider still)"
    )
    batch_fail: float = Field(
        default=0.0, ge=0, le=1, description="fraction of batch requests answered with a 500"
    )
    batch_expire_after: float | None = Field(
        default=None, ge=0, description="seconds after which an unfinished batch expires"
    )
    batch_max_requests: int = Field(default=50_000, ge=1, description="requests per batch at most")
    batch_max_bytes: int = Field(default=200 * 2**20, ge=1, description="bytes per batch input file at most")
    # Fine-tuning jobs (dspex.testing._finetune)
    finetune_seconds: float = Field(default=1.0, ge=0, description="seconds a fine-tuning job takes")
    finetune_fail: float = Field(
        default=0.0, ge=0, le=1, description="fraction of fine-tuning jobs that fail while running"
    )

    def updated(self, **knobs: Any) -> SimLMConfig:
        """A copy with ``knobs`` changed; an unknown or invalid knob -> ConfigurationError."""
        try:
            return SimLMConfig.model_validate({**self.model_dump(), **knobs})
        except ValidationError as exc:
            accepted = ", ".join(SimLMConfig.model_fields)
            raise ConfigurationError(f"invalid simulated LM knobs: {exc}; accepted: {accepted}") from exc


@dataclass(slots=True)
class _Call:
    """One /v1 request as the request log keeps it."""

    path: str
    t_start: float
    status: int = 499  # nginx's "client closed request": what a cancelled handler is counted as
    t_end: float = 0.0
    model: str | None = None
    seed: Any = None
    request_hash: str | None = None
    prompt_hash: str | None = None
    demos: int | None = None
    correct: bool | None = None
    text: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


_Handler = Callable[[web.Request, _Call], Awaitable[web.StreamResponse]]


class SimulatedLM:
    """The simulation's state and aiohttp handlers; one instance serves one event loop."""

    def __init__(self, config: SimLMConfig | None = None, **knobs: Any) -> None:
        self.config = (config or SimLMConfig()).updated(**knobs) if knobs else (config or SimLMConfig())
        self._rng = random.Random(self.config.seed)
        self._open = asyncio.Event()
        self._open.set()
        self._hold_pass: int | None = None  # None: not holding; else requests still let through
        self._down: DownMode | None = None
        self._ok_until_down = self.config.down_after
        self._reset_bucket()
        self.in_flight = self.held = 0  # live gauges: reset() leaves them alone
        self.files = FileStore(lambda: (self.config.file_max_bytes, self.config.files_max_bytes))
        self.batches = BatchStore(self)
        self.finetuning = FinetuneStore(self)
        self.reset()

    # ---- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Zero every counter and forget the request log (config, hold and down state stay)."""
        self.by_status: Counter[int] = Counter()
        self.by_path: Counter[str] = Counter()
        self.completions_ok = self.embeddings_ok = self.correct = self.incorrect = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.max_in_flight = self.in_flight
        self.held_total = 0
        # the calls themselves: a dict is made only when /admin/requests asks (see _Call.as_dict)
        self.log: deque[_Call] = deque(maxlen=self.config.log_size)
        self.batch_counts: Counter[str] = Counter()

    def configure(self, **knobs: Any) -> SimLMConfig:
        """Change knobs at runtime; returns the new configuration."""
        old, self.config = self.config, self.config.updated(**knobs)
        if "seed" in knobs:
            self._rng = random.Random(self.config.seed)
        if (old.rate, old.burst) != (self.config.rate, self.config.burst):
            self._reset_bucket()
        if "down_after" in knobs:
            self._ok_until_down = self.config.down_after
        if old.log_size != self.config.log_size:
            self.log = deque(self.log, maxlen=self.config.log_size)
        return self.config

    def hold(self, after: int = 0) -> None:
        """Make chat requests wait for :meth:`release`, after letting ``after`` more through."""
        self._hold_pass = after
        if after == 0:
            self._open.clear()

    def release(self) -> None:
        """Let every held request go on and stop holding."""
        self._hold_pass = None
        self._open.set()

    def down(self, mode: DownMode = "503") -> None:
        """Simulate an outage: answer 503, or drop connections without an answer."""
        self._down = mode

    def up(self) -> None:
        """End a simulated outage."""
        self._down = None
        self._ok_until_down = None

    def stats(self) -> dict[str, Any]:
        """Counters as ``GET /admin/stats`` reports them."""
        return {
            "simulated": True,
            "requests_total": sum(self.by_status.values()),
            "by_status": {str(code): n for code, n in sorted(self.by_status.items())},
            "by_path": dict(self.by_path),
            "completions_ok": self.completions_ok,
            "embeddings_ok": self.embeddings_ok,
            "correct": self.correct,
            "incorrect": self.incorrect,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "held": self.held,
            "held_total": self.held_total,
            "holding": self._hold_pass is not None,
            "down": self._down,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "batch": dict(self.batch_counts),
            "files": self.files.stats(),
            "fine_tuning": self.finetuning.stats(),
            "config": self.config.model_dump(mode="json"),
        }

    # ---- gates -------------------------------------------------------------------------------
    def _reset_bucket(self) -> None:
        rate = self.config.rate
        self._capacity = self.config.burst or max(1.0, rate or 1.0)
        self._tokens = self._capacity
        self._refilled = time.monotonic()

    def _take_token(self) -> float:
        """0.0 when the request may go on, else the seconds until a token is free."""
        rate = self.config.rate
        if rate is None:
            return 0.0
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate

    def _auth_error(self, request: web.Request) -> web.Response | None:
        key = self.config.require_api_key
        if key is None:
            return None
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {key.get_secret_value()}":
            return None
        return err.unauthorized(bool(header))

    def gate(self, request: web.Request, path: str) -> web.Response | None:
        """Count a files or batches request and refuse it during an outage or without the key."""
        self.by_path[path] += 1
        if self._down is not None:
            return err.unavailable()
        return self._auth_error(request)

    def draw(self) -> float:
        """A draw from the fault generator (seeded with ``seed``)."""
        return self._rng.random()

    def complete(self, body: dict[str, Any]) -> Completion:
        """The answer to chat request ``body`` under the current knobs (garbling, code abuse), as
        the chat route and the batch runner both give it."""
        config = self.config
        return build_completion(
            body,
            garble=config.garble,
            garble_fields=config.garble_fields,
            code_abuse=config.code_abuse,
            code_abuse_port=config.code_abuse_port,
        )

    def _fault(self, request: web.Request) -> web.Response | None:
        """The outage, rate-limit and failure gates, in that order."""
        if self._down == "503":
            return err.unavailable()
        if self._down == "drop":
            if request.transport is not None:
                request.transport.abort()
            return err.unavailable()
        wait = self._take_token()
        if wait > 0:
            return err.rate_limited(wait, self.config.rate or 0.0)
        if self.config.fail and self._rng.random() < self.config.fail:
            return err.server_error()
        return None

    async def _wait_turn(self, hold: bool) -> None:
        """Hang (timeout_rate), wait while held, then the configured latency."""
        if self.config.timeout_rate and self._rng.random() < self.config.timeout_rate:
            await asyncio.sleep(self.config.hang_seconds)
        if hold and self._hold_pass is not None:
            if self._hold_pass > 0:
                self._hold_pass -= 1
                if self._hold_pass == 0:
                    self._open.clear()
            else:
                await self._held()
        delay = self.config.latency
        if self.config.jitter:
            delay = max(0.0, delay + self._rng.uniform(-self.config.jitter, self.config.jitter))
        if delay:
            await asyncio.sleep(delay)

    async def _held(self) -> None:
        self.held += 1
        self.held_total += 1
        try:
            await self._open.wait()
        finally:
            self.held -= 1

    # ---- bookkeeping -------------------------------------------------------------------------
    def _begin(self, path: str) -> _Call:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.by_path[path] += 1
        return _Call(path=path, t_start=time.time())

    def _end(self, call: _Call) -> None:
        self.in_flight -= 1
        call.t_end = time.time()
        self.by_status[call.status] += 1
        self.log.append(call)

    def _count_completion(self, done: Completion) -> None:
        self.completions_ok += 1
        self.prompt_tokens += done.prompt_tokens
        self.completion_tokens += done.completion_tokens
        if done.correct is not None:
            self.correct += done.correct
            self.incorrect += not done.correct
        if self._ok_until_down is not None:
            self._ok_until_down -= 1
            if self._ok_until_down <= 0:
                self._down, self._ok_until_down = "503", None

    # ---- /v1 handlers ------------------------------------------------------------------------
    async def _serve(self, path: str, request: web.Request, handler: _Handler) -> web.StreamResponse:
        call = self._begin(path)
        try:
            try:
                response = await handler(request, call)
            except Exception:
                # a bug in the simulation must show as a 500 in the counters, not as a lost request
                logger.exception("simulated LM failed on a %s request", path)
                response = err.internal_error()
            call.status = response.status
            return response
        finally:
            self._end(call)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        return await self._serve("chat", request, self._chat)

    async def _chat(self, request: web.Request, call: _Call) -> web.StreamResponse:
        body = await err.read_json(request)
        if isinstance(body, web.Response):
            return body
        call.model, call.seed = body.get("model"), body.get("seed")
        rejected = self._auth_error(request) or self.model_error(body.get("model"))
        if rejected is None:
            rejected = err.check_chat_body(body) or self._fault(request)
        if rejected is not None:
            return rejected
        done = self.complete(body)
        call.request_hash = done.request_hash
        call.prompt_hash, call.demos, call.correct = done.prompt_hash, done.demos, done.correct
        call.text = done.question_text[:_LOG_TEXT_CHARS]
        await self._wait_turn(hold=True)
        if body.get("stream"):
            return await self._stream(request, body, done)
        self._count_completion(done)
        return web.json_response(done.payload, dumps=_compact_json)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], done: Completion
    ) -> web.StreamResponse:
        """Send ``done`` as server-sent chunks, ``stream_delay`` apart (see :mod:`dspex.testing._stream`)."""
        options = body.get("stream_options") or {}
        chunks = stream_chunks(
            done.payload,
            chunk_chars=self.config.stream_chunk_chars,
            include_usage=bool(options.get("include_usage")),
        )
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        try:
            for index, chunk in enumerate(chunks):
                if index and self.config.stream_delay:
                    await asyncio.sleep(self.config.stream_delay)
                await response.write(sse_event(chunk))
            await response.write(DONE_EVENT)
            await response.write_eof()
        except ConnectionResetError:  # the client stopped reading: not an answer, not a bug
            return response
        self._count_completion(done)
        return response

    def model_error(self, model: Any) -> web.Response | None:
        """A 404 for a model the simulation was not told about, else None."""
        known = self.config.models
        if known is None or model in known or self.finetuning.serves(model):
            return None
        return err.model_not_found(str(model))

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/embeddings``."""
        return await self._serve("embeddings", request, self._embeddings)

    async def _embeddings(self, request: web.Request, call: _Call) -> web.Response:
        body = await err.read_json(request)
        if isinstance(body, web.Response):
            return body
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return err.bad_request("`input` must be a string or a list of strings")
        call.model = str(body.get("model"))
        rejected = self._auth_error(request) or self.model_error(body.get("model")) or self._fault(request)
        if rejected is not None:
            return rejected
        await self._wait_turn(hold=False)
        dims = int(body.get("dimensions") or DEFAULT_DIMENSIONS)
        tokens = sum(len(t) for t in texts) // 4
        self.embeddings_ok += 1
        self.prompt_tokens += tokens
        data = [{"object": "embedding", "index": i, "embedding": embed(t, dims)} for i, t in enumerate(texts)]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response({"object": "list", "data": data, "model": call.model, "usage": usage})

    async def list_models(self, request: web.Request) -> web.Response:
        names = self.config.models or ("simulated-lm",)
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "dspex-simulated"} for n in names]
        return web.json_response({"object": "list", "data": data})


def make_app(sim: SimulatedLM) -> web.Application:
    """The aiohttp application serving ``sim``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(
        [
            web.post("/v1/chat/completions", sim.chat_completions),
            web.post("/v1/embeddings", sim.embeddings),
            web.get("/v1/models", sim.list_models),
            *files_routes(sim),
            *batches_routes(sim),
            *finetune_routes(sim),
            *responses_routes(sim),
            *admin_routes(sim),
        ]
    )
    return app


async def start_server(sim: SimulatedLM, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve ``sim`` on the running loop; returns the runner (``await runner.cleanup()`` stops) and port."""
    # handler_cancellation: a client that gives up (timeout) ends its hanging or held handler
    runner = web.AppRunner(make_app(sim), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    return runner, int(runner.addresses[0][1])
