"""``dspex sim-lm``: run the simulated OpenAI-compatible LM (a simulation, not a real model)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from dspex.errors import ConfigurationError
from dspex.testing.sim_lm import SimLMConfig, serve

__all__ = ["register"]

_HELP = """Run a SIMULATED OpenAI-compatible LM server (not a real model) for demos, tests and benchmarks.

It answers DSPy-style chat prompts for the arithmetic task (accuracy depends on the prompt's demos
and instructions, deterministically per request), answers requests with tools by scripted native
tool calls (an agent calls its tools, then submit), streams (SSE) when asked, serves embeddings,
and can add latency, rate limits (429 with Retry-After), injected 500s and hanging
requests. Admin endpoints under /admin (stats, hold/release, down/up, config, reset) steer it at runtime.

Example:

    dspex sim-lm --port 8000 --latency 0.1 --jitter 0.02 --rate 200

then point an LM at it: dspex.LM("openai/simulated", api_base="http://127.0.0.1:8000/v1").
"""


def _config(knobs: dict[str, object], key_env: str | None) -> SimLMConfig:
    chosen = {name: value for name, value in knobs.items() if value is not None}
    if key_env:
        key = os.environ.get(key_env)
        if not key:
            raise ConfigurationError(f"--require-api-key-env names {key_env}, which is not set or empty")
        chosen["require_api_key"] = key
    return SimLMConfig().updated(**chosen)


def sim_lm(
    host: Annotated[
        str, typer.Option(help="interface to bind; keep loopback unless you mean it")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0 picks a free one)")] = 8000,
    latency: Annotated[float, typer.Option(help="seconds before each answer")] = 0.0,
    jitter: Annotated[float, typer.Option(help="latency varies uniformly by +- this many seconds")] = 0.0,
    rate: Annotated[float | None, typer.Option(help="requests/s cap; 429 with Retry-After beyond it")] = None,
    burst: Annotated[
        float | None, typer.Option(help="token-bucket size (default: one second of --rate)")
    ] = None,
    fail: Annotated[float, typer.Option(help="fraction of requests answered with a 500")] = 0.0,
    timeout_rate: Annotated[
        float, typer.Option(help="fraction of requests that hang (see --hang-seconds)")
    ] = 0.0,
    hang_seconds: Annotated[float, typer.Option(help="how long a hanging request hangs")] = 300.0,
    require_api_key_env: Annotated[
        str | None, typer.Option(help="environment variable holding the API key requests must carry")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="a known model (repeatable); others get 404")
    ] = None,
    down_after: Annotated[int | None, typer.Option(help="answer 503 after this many answers")] = None,
    seed: Annotated[
        int, typer.Option(help="seed of the fault and jitter draws (answers never depend on it)")
    ] = 0,
    stream_delay: Annotated[
        float, typer.Option(help="seconds between the chunks of a streamed answer (stream: true)")
    ] = 0.0,
    stream_chunk_chars: Annotated[
        int, typer.Option(help="characters of content or tool arguments per streamed chunk")
    ] = 4,
) -> None:
    knobs: dict[str, object] = {
        "latency": latency, "jitter": jitter, "rate": rate, "burst": burst, "fail": fail,
        "timeout_rate": timeout_rate, "hang_seconds": hang_seconds, "models": model or None,
        "down_after": down_after, "seed": seed, "stream_delay": stream_delay,
        "stream_chunk_chars": stream_chunk_chars,
    }  # fmt: skip
    try:
        config = _config(knobs, require_api_key_env)
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    serve(config, host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add the ``sim-lm`` command to the root CLI."""
    app.command("sim-lm", help=_HELP)(sim_lm)
