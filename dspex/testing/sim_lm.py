"""A simulated OpenAI-compatible LM server, for demos, tests and benchmarks. Not a real model.

Endpoints: ``POST /v1/chat/completions`` (DSPy ChatAdapter and JSONAdapter formats; see
:mod:`dspex.testing.task` for the arithmetic task and its accuracy model; scripted native tool calls
for requests with ``tools``; server-sent chunks for ``stream: true``, ``--stream-delay`` apart),
``POST /v1/embeddings``, ``GET /v1/models``, OpenAI's Files and Batch APIs (``/v1/files``,
``/v1/batches``: a batch's requests answered as the chat endpoint answers them, after the
``batch_delay`` knob's seconds, with ``batch_fail`` and ``batch_expire_after`` for partial failures
and expiry; knobs through ``--config-json``), and the admin endpoints a test drives it with:

- ``GET /admin/stats``: counters (requests by status, completions, in flight now and at most, held,
  tokens, correct/incorrect arithmetic answers) and the configuration (the API key masked);
- ``GET /admin/requests?limit=N``: the last N requests (times, model, seed, request and prompt
  hashes, demos, whether the arithmetic answer was correct, the question);
- ``GET|POST /admin/config``: read or change knobs (:class:`SimLMConfig`) at runtime;
- ``POST /admin/hold`` (``{"after": N}`` lets N more chat requests through first) and
  ``POST /admin/release``: chat requests wait until released, so a test acts "mid-job" on an event;
- ``POST /admin/down`` (``{"mode": "503"|"drop"}``) and ``POST /admin/up``: a simulated outage;
- ``POST /admin/reset``: zero the counters and forget the request log.

``--admin-port`` serves the /admin endpoints on a listener and thread of their own as well, so that
a test's control requests are answered promptly however many LM connections wait to be accepted
(:class:`dspex.testing.SimulatedLMServer` uses it; see :mod:`dspex.testing._admin`).

Run it with ``dspex sim-lm`` or ``python -m dspex.testing.sim_lm --port 8000 --latency 0.1``; from
Python use :class:`dspex.testing.SimulatedLMServer`. Answers depend only on the request (the content
id of model, messages, seed and temperature); the knobs add latency and faults around them, drawn
from a random generator seeded with ``seed`` so that a retried request can succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dspex._gc import tune_gc_for_worker
from dspex._loop import run_worker_loop
from dspex.errors import ConfigurationError
from dspex.testing._admin import AdminListener
from dspex.testing._server import SimLMConfig, SimulatedLM, start_server

__all__ = ["AdminPort", "SimLMConfig", "SimulatedLM", "config_from_args", "main", "serve"]

logger = logging.getLogger(__name__)


def _write_port_file(path: str, port: int) -> None:
    # write then rename, so a reader never sees a half-written number
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(str(port))
    os.replace(tmp, path)


@dataclass(frozen=True)
class AdminPort:
    """Serve /admin on a listener of its own too (see :mod:`dspex.testing._admin`): ``port`` (0: a
    free one), written to ``port_file`` once listening."""

    port: int = 0
    port_file: str | None = None


async def _serve(
    config: SimLMConfig, host: str, port: int, port_file: str | None, admin: AdminPort | None = None
) -> None:
    sim = SimulatedLM(config)
    runner, bound = await start_server(sim, host, port)
    listener = AdminListener(sim, asyncio.get_running_loop()) if admin is not None else None
    tune_gc_for_worker()  # it is a server process of its own, like the workers
    print(f"dspex simulated LM (a simulation, not a real model) on http://{host}:{bound}/v1", flush=True)
    if listener is not None and admin is not None:
        admin_bound = listener.start(host, admin.port)
        print(f"its /admin endpoints also on http://{host}:{admin_bound}/admin", flush=True)
        if admin.port_file:
            _write_port_file(admin.port_file, admin_bound)
    if port_file:
        _write_port_file(port_file, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        logger.info("simulated LM on port %d stopping", bound)
        if listener is not None:
            await asyncio.to_thread(listener.stop)  # its last actions may still need this loop
        await runner.cleanup()


def serve(
    config: SimLMConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    port_file: str | None = None,
    admin: AdminPort | None = None,
) -> None:
    """Run the simulated LM until SIGTERM or SIGINT (blocking); ``port_file`` receives the bound port,
    ``admin`` asks for the /admin endpoints on a listener of their own as well.

    It runs on the loop a worker runs on (uvloop where installed; ``DSPEX_EVENT_LOOP``, see
    :mod:`dspex._loop`): a load test's simulated LM shares the machine with what it measures, and
    uvloop's sockets and callbacks cost it less CPU per request."""
    run_worker_loop(_serve(config, host, port, port_file, admin))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dspex.testing.sim_lm",
        description="Run the dspex simulated OpenAI-compatible LM (a simulation, not a real model).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port to this file once listening")
    parser.add_argument(
        "--admin-port", type=int, help="serve /admin on this port too, on a thread of its own (0: a free one)"
    )
    parser.add_argument("--admin-port-file", help="write the bound admin port to this file")
    parser.add_argument("--config-json", help="knobs as a JSON object (flags below override it)")
    numeric = {"latency": float, "jitter": float, "rate": float, "burst": float, "fail": float,
               "timeout-rate": float, "hang-seconds": float, "down-after": int, "seed": int,
               "stream-delay": float, "stream-chunk-chars": int}  # fmt: skip
    for flag, kind in numeric.items():
        parser.add_argument(f"--{flag}", type=kind)
    parser.add_argument("--model", action="append", dest="models", help="a known model (repeatable)")
    parser.add_argument("--require-api-key-env", help="environment variable holding the key to require")
    parser.add_argument("--log-level", default="INFO")
    return parser


def config_from_args(args: argparse.Namespace) -> SimLMConfig:
    """The configuration the command line asks for; a bad value -> ConfigurationError."""
    knobs: dict[str, Any] = json.loads(args.config_json) if args.config_json else {}
    names = (
        "latency",
        "jitter",
        "rate",
        "burst",
        "fail",
        "timeout_rate",
        "hang_seconds",
        "down_after",
        "seed",
        "models",
        "stream_delay",
        "stream_chunk_chars",
    )
    knobs.update({name: getattr(args, name) for name in names if getattr(args, name) is not None})
    if args.require_api_key_env:
        key = os.environ.get(args.require_api_key_env)
        if not key:
            raise ConfigurationError(f"environment variable {args.require_api_key_env} is not set or empty")
        knobs["require_api_key"] = key
    return SimLMConfig().updated(**knobs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dspex.testing.sim_lm``; exit code 2 for bad usage."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
    except (ConfigurationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    admin = None if args.admin_port is None else AdminPort(args.admin_port, args.admin_port_file)
    serve(config, host=args.host, port=args.port, port_file=args.port_file, admin=admin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
