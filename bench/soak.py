"""Soak: a 100,000-example job at 1 s LM latency through 2 predictors, with every worker's RSS sampled.

    .venv/bin/python bench/soak.py                       # its own broker on a free port, 100,000 examples
    .venv/bin/python bench/soak.py --bootstrap 127.0.0.1:9092 --examples 20000

Starts the simulated LM (a simulation, not a model; 1 s latency), one aggregator, one scorer and two
predictors (LocalStack), submits one evaluation through ``dspex.Client`` and samples the resident
memory of every worker process every ``--sample-s`` seconds until the job is done. Prints a markdown
section for bench/RESULTS.md: throughput, the RSS of each worker at 10% of the job, at its peak and at
the end, and whether memory stayed flat (no worker ended more than ``--flat-mb`` above its 10% figure).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import psutil
from common import machine_summary, markdown_table

from dspex.client import Client
from dspex.configuration import context
from dspex.dev import DevBroker
from dspex.dev.stack import LocalStack
from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.modules import ChainOfThought
from dspex.signatures import make_signature
from dspex.testing import SimulatedLMServer, arithmetic_dataset

INSTRUCTIONS = "Answer the arithmetic question with a number."
MB = 1024 * 1024


@dataclass
class Samples:
    """RSS (MB) per worker name, with the fraction of the job done at each sample."""

    rows: list[tuple[float, float, dict[str, float]]] = field(default_factory=list)  # (t, done, rss)

    def at_fraction(self, fraction: float) -> dict[str, float]:
        for _, done, rss in self.rows:
            if done >= fraction:
                return rss
        return self.rows[-1][2] if self.rows else {}


def _rss(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / MB
    except psutil.Error:
        return 0.0


def _sample(stack: LocalStack, client: Client, job_id: str, total: int, every: float, stop: threading.Event,
            samples: Samples) -> None:  # fmt: skip
    started = time.monotonic()
    while not stop.wait(every):
        status = client.status(job_id)
        done = (status.done / total) if status is not None else 0.0
        rss = {w.name: _rss(w.pid) for w in stack.workers if w.alive}
        samples.rows.append((time.monotonic() - started, done, rss))
        print(f"  {time.monotonic() - started:6.0f} s  {100 * done:5.1f}%  "
              + "  ".join(f"{name} {mb:.0f} MB" for name, mb in rss.items()), flush=True)  # fmt: skip


def _run(args: argparse.Namespace, bootstrap: str, work_dir: Path) -> tuple[EvaluationResult, Samples, float]:
    prefix = f"soak{int(time.time())}."
    with SimulatedLMServer(latency=args.latency) as sim, LocalStack(bootstrap, prefix, work_dir) as stack:
        stack.start("aggregate")
        stack.start("score", "--concurrency", "1024")
        for _ in range(2):
            stack.start("predict", "--allow-api-base", sim.base_url, "--concurrency", str(args.concurrency),
                        "--lm-initial-limit", str(args.concurrency))  # fmt: skip
        program = ChainOfThought(make_signature("question -> answer", INSTRUCTIONS))
        lm = LM("openai/simulated", api_base=sim.base_url, cache=False)
        with Client(bootstrap, prefix=prefix) as client, context(lm=lm):
            examples = arithmetic_dataset(args.examples, seed=3)
            submitted = client.evaluate(
                program, examples, "numeric_equal:answer", wait=False, display_progress=False
            )
            job_id = cast(str, submitted)
            samples, stop = Samples(), threading.Event()
            sampler = threading.Thread(
                target=_sample, args=(stack, client, job_id, args.examples, args.sample_s, stop, samples)
            )
            started = time.monotonic()
            sampler.start()
            try:
                client.wait(job_id, timeout=args.timeout)
            finally:
                stop.set()
                sampler.join()
            elapsed = time.monotonic() - started
            return client.collect(job_id)[0], samples, elapsed


def _report(args: argparse.Namespace, result: EvaluationResult, samples: Samples, elapsed: float) -> str:
    early, end = samples.at_fraction(0.1), samples.rows[-1][2] if samples.rows else {}
    peak: dict[str, float] = {}
    for _, _, rss in samples.rows:
        for name, mb in rss.items():
            peak[name] = max(peak.get(name, 0.0), mb)
    rows = [[name, f"{early.get(name, 0):.0f}", f"{peak[name]:.0f}", f"{end.get(name, 0):.0f}",
             f"{end.get(name, 0) - early.get(name, 0):+.0f}"] for name in sorted(peak)]  # fmt: skip
    # Flat means no growth: memory handed back after the start-up burst (a negative figure) is fine.
    flat = all(float(row[4]) <= args.flat_mb for row in rows)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    verdict = "flat" if flat else "NOT flat"
    lines = [
        "## soak",
        "",
        f"`.venv/bin/python bench/soak.py --examples {args.examples}` ({when})",
        "",
        f"{args.examples:,} examples, ChainOfThought, simulated LM at {args.latency:g} s latency, "
        f"2 predictors (concurrency {args.concurrency} each), 1 scorer, 1 aggregator; {machine_summary()}.",
        "",
        f"Done in {elapsed:.0f} s ({args.examples / elapsed:.0f} examples/s); score {result.score:.1f}, "
        f"{result.errors} errors; RSS sampled every {args.sample_s:g} s ({len(samples.rows)} samples).",
        "",
        markdown_table(["worker", "RSS at 10% (MB)", "peak (MB)", "end (MB)", "end - 10% (MB)"], rows),
        "",
        f"Memory {verdict} (no worker ended more than {args.flat_mb:g} MB above its figure at 10% "
        "of the job).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="use this broker (default: start one of our own)")
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=1024, help="in flight per predictor")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--flat-mb", type=float, default=50.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dspex-soak-") as tmp:
        broker = None
        if args.bootstrap is None:
            from dspex.dev._system import free_port

            broker = DevBroker(port=free_port(), data_dir=Path(tmp) / "broker", startup_timeout=120.0)
            broker.start()
        try:
            result, samples, elapsed = _run(args, args.bootstrap or broker.bootstrap, Path(tmp) / "stack")  # type: ignore[union-attr]
        finally:
            if broker is not None:
                broker.stop()
    print(_report(args, result, samples, elapsed))


if __name__ == "__main__":
    main()
