"""What both examples share: read a JSONL dataset, start the simulated LM, evaluate locally or on Kafka.

The simulated LM is a simulation, not a real model: it answers the arithmetic task with an accuracy
that depends on the prompt, and anything else with placeholder text.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import dspex
from dspex.client import Client
from dspex.testing import SimulatedLMServer

__all__ = ["main", "read_jsonl"]


def read_jsonl(path: Path, inputs: list[str]) -> list[dspex.Example]:
    """One Example per non-blank line, with ``inputs`` marked."""
    lines = path.read_text("utf-8").splitlines()
    return [dspex.Example(json.loads(line)).with_inputs(*inputs) for line in lines if line.strip()]


def _arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--kafka", metavar="HOST:PORT", help="evaluate through the cluster at this broker")
    parser.add_argument("--prefix", default="dspex.", help="topic prefix of the cluster (with --kafka)")
    parser.add_argument("--api-base", help="use this LM endpoint instead of starting the simulated LM")
    parser.add_argument("--latency", type=float, default=0.05, help="simulated LM latency in seconds")
    return parser.parse_args()


def main(program: dspex.Module, devset: list[dspex.Example], metric: str, *, description: str) -> None:
    """Evaluate ``program`` on ``devset`` locally (default) or through Kafka (``--kafka``)."""
    args = _arguments(description)
    if args.api_base:
        _evaluate(program, devset, metric, args, args.api_base)
        return
    with SimulatedLMServer(in_process=True, latency=args.latency) as sim:
        _evaluate(program, devset, metric, args, sim.base_url)


def _evaluate(program: dspex.Module, devset: list[dspex.Example], metric: str, args: argparse.Namespace,
              api_base: str) -> None:  # fmt: skip
    cache = tempfile.mkdtemp(prefix="dspex-example-cache-")  # a fresh cache: every answer comes from the LM
    lm = dspex.LM("openai/simulated", api_base=api_base, cache_dir=cache)
    with dspex.context(lm=lm):
        if args.kafka:
            with Client(args.kafka, prefix=args.prefix) as client:
                result = client.evaluate(program, devset, metric)
        else:
            result = dspex.Evaluate(devset=devset, metric=metric, display_progress=True)(program)
    print(f"{metric}: {result.score:.1f}% on {result.processed} examples, {result.errors} errors, "
          f"{result.usage.total_tokens:,} tokens")  # fmt: skip
