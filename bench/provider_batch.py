"""Batch mode's cost in time: LM requests per provider batch and wall time over the provider's delay.

Reproduce (a few minutes on a 2-core machine):

    .venv/bin/python bench/provider_batch.py
    .venv/bin/python bench/provider_batch.py --examples 2000 --delays 0 5 --max-requests 500

One run starts a dev broker of its own, 1 aggregator, 1 scorer, 1 predictor and 1 provider-batch
worker (``--batch-window W --batch-poll P --batch-max-requests M``) and the simulated LM (a
simulation of OpenAI's Batch API, not a model). It evaluates ``Predict("question -> answer")`` on
``--examples`` examples online once (50 ms LM latency), then in batch mode once per provider delay
(the simulated LM's ``batch_delay``: seconds a batch stays ``in_progress``). A one-call program takes
one batch round, so the wall time over the delay is what the batch path adds: collecting (the
window), checkpoints, polling, and the tasks' second pass through the predictors.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _pipeline_stack import BenchStack, progress
from common import machine_summary, markdown_table

from dspex.configuration import context
from dspex.lm import LM
from dspex.modules import Predict
from dspex.testing import SimulatedLMServer, arithmetic_dataset

METRIC = "exact_match:answer"


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 5.0])
    parser.add_argument("--batch-window", type=float, default=1.0)
    parser.add_argument("--batch-poll", type=float, default=0.5)
    parser.add_argument("--max-requests", type=int, default=500)
    return parser.parse_args(argv)


def _evaluate(stack: BenchStack, lm: LM, examples: list[Any], **options: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    with context(lm=lm):
        result = stack.bench_client.evaluate(
            Predict("question -> answer"), examples, METRIC, display_progress=False, timeout=1800, **options
        )
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    rows: list[list[Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="dspex-bench-batch-") as tmp,
        SimulatedLMServer(latency=0.05) as sim,
    ):
        stack = BenchStack(Path(tmp))
        try:
            stack.start(1, ["--concurrency", "256"])
            batch_args = ["--batch-window", str(args.batch_window), "--batch-poll", str(args.batch_poll)]
            stack.stack.start("provider-batch", *batch_args, "--batch-max-requests", str(args.max_requests))
            stack.wait_ready()
            lm = LM("openai/simulated", api_base=sim.base_url, cache=False)
            # every run its own examples: the provider-batch worker reuses answers it already has
            wall, online = _evaluate(stack, lm, arithmetic_dataset(args.examples, seed=7))
            progress(f"online: {wall:.1f} s, score {online.score}")
            rows.append(["online (50 ms per call)", "-", "-", f"{wall:.1f}", "-"])
            for run, delay in enumerate(args.delays):
                sim.control.configure(batch_delay=delay)
                sim.control.reset()
                examples = arithmetic_dataset(args.examples, seed=100 + run)
                wall, batched = _evaluate(stack, lm, examples, mode="batch")
                stats = sim.control.stats()["batch"]
                per_batch = stats["requests_ok"] / max(1, stats["created"])
                progress(f"batch, delay {delay:g} s: {wall:.1f} s, {stats}")
                assert batched.errors == 0 and stats.get("repeated", 0) == 0
                rows.append(
                    [f"batch, provider delay {delay:g} s", stats["created"], f"{per_batch:.0f}",
                     f"{wall:.1f}", f"{wall - delay:.1f}"]
                )  # fmt: skip
        finally:
            stack.close()
    print(f"### Provider batch mode ({args.examples} examples, window {args.batch_window:g} s, "
          f"poll {args.batch_poll:g} s, at most {args.max_requests} requests per batch)\n")  # fmt: skip
    headers = ["run", "batches", "requests / batch", "wall s", "wall - delay s"]
    print(markdown_table(headers, rows))
    print(f"\n{machine_summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
