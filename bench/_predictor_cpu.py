"""CPU per example of one predictor, measured in-process (a profiling harness, not a RESULTS section).

    .venv/bin/python bench/_predictor_cpu.py                       # 6,000 tasks at 100 ms
    .venv/bin/python bench/_predictor_cpu.py --profile /tmp/p.prof  # the same under cProfile
    .venv/bin/python bench/_predictor_cpu.py --default-gc           # without the workers' GC tuning
    .venv/bin/python bench/_predictor_cpu.py --no-record-lm-calls   # results without their LM calls
    DSPEX_EVENT_LOOP=asyncio .venv/bin/python bench/_predictor_cpu.py  # on asyncio's loop, not uvloop
    DSPEX_LM_HTTP_CLIENT=aiohttp .venv/bin/python bench/_predictor_cpu.py  # LM calls through aiohttp

Starts a dev broker of its own (temporary data dir) and a simulated LM (100 ms), submits one job of
``--examples`` tasks with ``dspex.Client`` (no workers yet, so the tasks wait in Kafka), then runs a
:class:`~dspex.processors.predictor.Predictor` (concurrency 1024, LM limit 1024) in this process.
From its first task to its last it reports wall time and the process's CPU time per example (every
thread: the event loop, librdkafka's and the producer's poll thread) and the event loop thread's
alone. The optional cProfile covers the event loop thread. Everything it started is stopped at the
end. Run it twice against two trees (``PYTHONPATH=<other tree>``) to compare them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from common import own_broker, process_cpu_s, start_sim

from dspex._gc import tune_gc_for_worker
from dspex.client import Client
from dspex.configuration import context
from dspex.lm import LM
from dspex.modules import Predict
from dspex.processors.common import WorkerOptions
from dspex.processors.endpoints import EndpointOptions
from dspex.processors.predictor import Predictor
from dspex.processors.security import SecurityPolicy
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry
from dspex.testing import arithmetic_dataset

PREFIX = "cpu."
CONCURRENCY = 1024


async def _measure(
    bootstrap: str, sim_base: str, examples: int, profile: Path | None, record_lm_calls: bool
) -> str:
    # only when asked: trees before the LM call log have no such option (PYTHONPATH=<other tree>)
    recording: dict[str, Any] = {} if record_lm_calls else {"record_lm_calls": False}
    options = WorkerOptions(
        **recording,
        prefix=PREFIX,
        concurrency=CONCURRENCY,
        metrics=False,
        fast_groups=True,
        policy=SecurityPolicy(allow_api_bases=[sim_base]),
        endpoints=EndpointOptions(initial_limit=CONCURRENCY),
    )
    worker = Predictor(KafkaSettings(bootstrap_servers=bootstrap), options)
    running = asyncio.create_task(worker.run())
    await worker.wait_ready(120)
    runtime = worker.runtime
    assert runtime is not None
    while runtime.stats.received == 0:
        await asyncio.sleep(0.005)
    # the event loop thread's CPU clock, not wall time: on a shared machine other processes' load
    # would otherwise be charged to whichever function was running when the scheduler took the core
    profiler = cProfile.Profile(time.thread_time) if profile is not None else None
    cpu, wall, loop_cpu = process_cpu_s(), time.perf_counter(), time.thread_time()
    if profiler is not None:
        profiler.enable()
    while runtime.stats.handled < examples:
        await asyncio.sleep(0.01)
    if profiler is not None:
        profiler.disable()
    cpu, wall = process_cpu_s() - cpu, time.perf_counter() - wall
    loop_cpu = time.thread_time() - loop_cpu
    worker.request_stop()
    await running
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
    return (
        f"{examples} tasks in {wall:.2f} s ({examples / wall:,.0f}/s); CPU {1000 * cpu / examples:.3f} ms "
        f"per example (event loop thread {1000 * loop_cpu / examples:.3f} ms)"
    )


def _run(measuring: Coroutine[Any, Any, str]) -> str:
    """On the loop a worker runs on (uvloop unless ``DSPEX_EVENT_LOOP=asyncio``); trees from before
    dspex._loop (``PYTHONPATH=<other tree>``) on asyncio's."""
    try:
        from dspex._loop import run_worker_loop
    except ImportError:
        return asyncio.run(measuring)
    return run_worker_loop(measuring)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=6000)
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats here")
    parser.add_argument(
        "--default-gc", action="store_true", help="keep CPython's collector settings (workers tune them)"
    )
    parser.add_argument(
        "--no-record-lm-calls", action="store_true", help="as --no-record-lm-calls: no LM calls in results"
    )
    args = parser.parse_args()
    with own_broker("predictor") as broker, start_sim(latency=0.1) as sim:
        ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), TopicRegistry(PREFIX))
        with (
            Client(broker.bootstrap, prefix=PREFIX) as client,
            context(lm=LM("openai/simulated", api_base=sim.base_url, cache=False)),
        ):
            client.evaluate(
                Predict("question -> answer"), arithmetic_dataset(args.examples, seed=7),
                "exact_match:answer", wait=False, display_progress=False,
            )  # fmt: skip
        if not args.default_gc:
            tune_gc_for_worker()  # as `dspex worker predict` does
        recording = not args.no_record_lm_calls
        measuring = _measure(broker.bootstrap, sim.base_url, args.examples, args.profile, recording)
        print(_run(measuring))
    return 0


if __name__ == "__main__":
    sys.exit(main())
