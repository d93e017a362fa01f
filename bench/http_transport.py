"""HTTP client throughput against a 100 ms OpenAI-compatible server, at 64 / 256 / 1,000 in flight.

Why: the LM client must stay fast with 1,000 calls in flight, and httpx's own pool is known to
collapse well before that (DESIGN.md section 4). This measures, in one run on one machine:

- httpx.AsyncClient, default transport, pool of 64 connections, and of 1,000;
- httpx.AsyncClient over httpx_aiohttp's AiohttpTransport (``dspex.lm.transport.get_client()``,
  over the loop's shared aiohttp session);
- bare aiohttp.ClientSession;
- dspex.lm.LM itself (cache off), which sends with that shared aiohttp session directly and adds
  request building, JSON parsing, retries, the limiter and usage.

The server runs in a subprocess (its own process and event loop), so it does not share the client's
loop. Each (client, in-flight) cell runs in a fresh process of its own: ``--warmup`` seconds, then completed
calls are counted for ``--seconds``; ``--rounds`` interleaved rounds, the best kept. Client CPU is the
client process's CPU time in the window per call. Run:

    .venv/bin/python bench/http_transport.py                 # ~1.5 min on 2 cores
    .venv/bin/python bench/http_transport.py --rounds 2      # best of 2 interleaved rounds, ~3 min
    .venv/bin/python bench/http_transport.py --seconds 1 --rounds 1 --levels 64,1000

Prints a markdown table (calls/s; client CPU us per call).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from aiohttp import web

from dspex.lm import LM
from dspex.lm.transport import aclose_client, get_client

__all__ = ["main"]

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]
BODY = {"model": "bench", "messages": MESSAGES, "temperature": 0.0, "max_tokens": 16}
ANSWER = {
    "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "5"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1},
}

Call = Callable[[], Awaitable[object]]


# -- server (subprocess) -------------------------------------------------------------------------


def serve(latency: float) -> None:
    """Run the 100 ms server; print its port on stdout, stop when stdin closes."""

    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # clients are killed mid-call, on purpose

    async def completions(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(latency)
        return web.json_response(ANSWER)

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", completions)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.cleanup()

    asyncio.run(run())


# -- clients -------------------------------------------------------------------------------------


@asynccontextmanager
async def httpx_default(url: str, pool: int) -> AsyncIterator[Call]:
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) as client:

        async def call() -> object:
            response = await client.post(url, json=BODY)
            response.raise_for_status()
            return response.json()

        yield call


@asynccontextmanager
async def httpx_aiohttp(url: str) -> AsyncIterator[Call]:
    client = await get_client()

    async def call() -> object:
        response = await client.post(url, json=BODY, timeout=120.0)
        response.raise_for_status()
        return response.json()

    yield call
    await aclose_client()


@asynccontextmanager
async def bare_aiohttp(url: str) -> AsyncIterator[Call]:
    connector = aiohttp.TCPConnector(limit=4096)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> object:
            async with session.post(url, json=BODY) as response:
                response.raise_for_status()
                return await response.json()

        yield call


@asynccontextmanager
async def dspex_lm(url: str) -> AsyncIterator[Call]:
    lm = LM("sim/bench", api_base=url.rsplit("/chat/completions", 1)[0], cache=False, max_tokens=16)

    async def call() -> object:
        return await lm.acomplete(MESSAGES)

    yield call
    await lm.aclose()


CLIENTS: dict[str, Callable[[str], Any]] = {
    "httpx, default transport, pool 64": lambda url: httpx_default(url, 64),
    "httpx, default transport, pool 1,000": lambda url: httpx_default(url, 1000),
    "httpx over httpx_aiohttp (dspex.lm.transport)": httpx_aiohttp,
    "bare aiohttp": bare_aiohttp,
    "dspex.lm.LM, cache off": dspex_lm,
}


# -- measurement ---------------------------------------------------------------------------------


@dataclass
class Cell:
    calls_per_s: float
    cpu_us_per_call: float
    errors: int


async def measure(
    make: Callable[[str], Any], url: str, in_flight: int, warmup: float, seconds: float
) -> None:
    """Measure one cell and print it as JSON; then exit at once (see run_cell)."""
    counted = errors = 0
    counting = False

    async def worker(call: Call) -> None:
        nonlocal counted, errors
        while True:
            try:
                await call()
            except (TimeoutError, httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
                errors += 1
                if errors == 1:
                    print(f"  first error: {exc!r}", file=sys.stderr)
                continue
            counted += counting

    async with make(url) as call:
        workers = asyncio.gather(*(worker(call) for _ in range(in_flight)))
        await asyncio.sleep(warmup)
        counting, cpu0, wall0 = True, time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cell = Cell(counted / (time.perf_counter() - wall0), 0.0, errors)
        cell.cpu_us_per_call = (time.process_time() - cpu0) / max(counted, 1) * 1e6
        print(json.dumps(vars(cell)), flush=True)
        # No clean shutdown: httpx's own pool takes tens of seconds to cancel 1,000 queued calls,
        # which would be most of this script's run time and measures nothing.
        workers.cancel()  # only scheduled: the process ends first
        os._exit(0)


def run_cell(name: str, in_flight: int, url: str, warmup: float, seconds: float) -> Cell:
    """One cell in a fresh process (its own loop and pools), killed as soon as it has reported."""
    command = [sys.executable, __file__, "--cell", name, "--in-flight", str(in_flight), "--url", url]
    command += ["--warmup", str(warmup), "--seconds", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=warmup + seconds + 120, check=True)
    return Cell(**json.loads(done.stdout.strip().splitlines()[-1]))


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--latency", str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.stdout is None:
        raise RuntimeError("no stdout from the server process")
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def table(results: dict[str, dict[int, Cell]], levels: list[int]) -> str:
    head = "| client | " + " | ".join(f"{n:,} in flight" for n in levels) + " |"
    rule = "|---|" + "---:|" * len(levels)
    rows = [head, rule]
    for name, cells in results.items():
        parts = []
        for n in levels:
            cell = cells[n]
            text = f"{cell.calls_per_s:,.0f}/s ({cell.cpu_us_per_call:,.0f} us)"
            parts.append(text + (f", {cell.errors} errors" if cell.errors else ""))
        rows.append(f"| {name} | " + " | ".join(parts) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--levels", default="64,256,1000")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--in-flight", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.latency)
    elif args.cell:
        asyncio.run(measure(CLIENTS[args.cell], args.url, args.in_flight, args.warmup, args.seconds))
    else:
        run_all(args)


def run_all(args: argparse.Namespace) -> None:
    """Every client at every level, ``args.rounds`` times interleaved; print the table."""
    levels = [int(level) for level in args.levels.split(",")]
    proc, url = start_server(args.latency)
    results: dict[str, dict[int, Cell]] = {}
    try:
        # Rounds interleave the clients, and each cell keeps its best round: on a shared machine a
        # neighbour's burst then hurts one round of one cell, not a client's whole row.
        for _ in range(args.rounds):
            for n in levels:
                for name in CLIENTS:
                    cell = run_cell(name, n, url, args.warmup, args.seconds)
                    best = results.setdefault(name, {}).get(n)
                    if best is None or cell.calls_per_s > best.calls_per_s:
                        results[name][n] = cell
                    print(f"{name} @ {n}: {json.dumps(vars(cell))}", file=sys.stderr, flush=True)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)
    print(summary(args))
    print()
    print(table(results, levels))
    print()
    print(verdict(results, max(levels)))


def summary(args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"HTTP clients against a local aiohttp server answering after {args.latency * 1000:.0f} ms (its own "
        f"process; each cell a fresh client process), {args.seconds:g} s per cell after {args.warmup:g} s "
        f"of warm-up, best of {args.rounds} round(s); {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}, load average {load}. Cells: calls/s (client CPU per call)."
    )


def verdict(results: dict[str, dict[int, Cell]], level: int) -> str:
    lm = results["dspex.lm.LM, cache off"][level].calls_per_s
    bare = results["bare aiohttp"][level].calls_per_s
    pools = [results[name][level].calls_per_s for name in results if "default transport" in name]
    return (
        f"At {level:,} in flight dspex.lm.LM did {lm:,.0f} calls/s ({lm / bare:.0%} of bare aiohttp's "
        f"{bare:,.0f}/s); httpx with its own pool did {max(pools):,.0f}/s at best."
    )


if __name__ == "__main__":
    main()
