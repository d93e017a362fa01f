"""dspex's local Evaluate against DSPy's Evaluate, on one simulated LM, in the same run.

Reproduce (about 2-3 minutes on a 2-core machine):

    .venv/bin/python bench/evaluate_vs_dspy.py
    .venv/bin/python bench/evaluate_vs_dspy.py --examples 3000 --latency 0.1 --dspex 64,256,1024 \
        --dspy 16,64,128,256,512

One simulated LM subprocess (100 ms latency by default) serves every configuration. Each
configuration runs in a fresh child process (so DSPy's threads never share a process with our event
loop), evaluates ``Predict("question -> answer")`` over the same arithmetic devset with the LM cache
off, after a warm-up on other questions at the same width (connections open, threads started). The
child measures its own wall and CPU time over the evaluation call only, and the simulated LM's CPU
time and request count over the same window.

Columns: examples/s; CPU ms per example of the evaluating process; CPU ms per example of the
simulated LM (reported apart, not included); requests the LM answered (1 per example: cache off);
the score; the ratio of examples/s to DSPy's best configuration. Both engines send the same prompt
(the simulated LM's prompt hash agrees), but the simulated LM draws right/wrong from the whole request,
which includes ``temperature`` (dspex sends 0.0, DSPy sends none): their scores differ by that draw,
both near the task's zero-shot accuracy of 45%.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx
import psutil
from common import CpuClock, machine_summary, markdown_table, run_child_json, start_sim

DATASET_SEED = 7
WARMUP_SEED = 8
WARMUP_EXAMPLES = 64


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="devset size per configuration")
    parser.add_argument("--latency", type=float, default=0.1, help="simulated LM latency, seconds")
    parser.add_argument("--dspex", type=_ints, default=[64, 256, 1024], help="dspex concurrency levels")
    parser.add_argument("--dspy", type=_ints, default=[16, 64, 128, 256, 512], help="DSPy thread counts")
    parser.add_argument("--child", choices=["dspex", "dspy"], help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--sim-pid", type=int, help=argparse.SUPPRESS)
    return parser


# --------------------------------------------------------------------------- children


def _sim_window(base_url: str, sim_pid: int) -> tuple[float, int]:
    times = psutil.Process(sim_pid).cpu_times()
    stats = httpx.get(base_url.removesuffix("/v1") + "/admin/stats", timeout=10).json()
    return times.user + times.system, int(stats["completions_ok"])


def _measure(run: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Time ``run()`` (returns (score, errors)); the simulated LM's CPU and requests over the same window."""
    sim_cpu0, requests0 = _sim_window(args.base_url, args.sim_pid)
    with CpuClock() as clock:
        score, errors = run()
    sim_cpu1, requests1 = _sim_window(args.base_url, args.sim_pid)
    return {
        "wall_s": clock.wall_s,
        "cpu_s": clock.cpu_s,
        "sim_cpu_s": sim_cpu1 - sim_cpu0,
        "requests": requests1 - requests0,
        "score": score,
        "errors": errors,
    }


def _child_dspex(args: argparse.Namespace) -> dict[str, Any]:
    import dspex
    from dspex.testing.task import arithmetic_dataset

    lm = dspex.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False)
    program = dspex.Predict("question -> answer", lm=lm)
    metric = dspex.metrics.exact_match("answer")
    warmup = arithmetic_dataset(max(WARMUP_EXAMPLES, args.width), WARMUP_SEED)
    dspex.Evaluate(devset=warmup, metric=metric, concurrency=args.width)(program)
    evaluate = dspex.Evaluate(
        devset=arithmetic_dataset(args.examples, DATASET_SEED), metric=metric, concurrency=args.width
    )

    def run() -> tuple[float, int]:
        result = evaluate(program)
        return result.score, result.errors

    return _measure(run, args)


def _child_dspy(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    import dspy
    from dspy.evaluate import answer_exact_match

    from dspex.testing.task import arithmetic_rows

    def devset(n: int, seed: int) -> list[Any]:
        return [dspy.Example(**row).with_inputs("question") for row in arithmetic_rows(n, seed)]

    dspy.configure(lm=dspy.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False))
    program = dspy.Predict("question -> answer")
    warmup = devset(max(WARMUP_EXAMPLES, args.width), WARMUP_SEED)
    dspy.Evaluate(devset=warmup, metric=answer_exact_match, num_threads=args.width)(program)
    evaluate = dspy.Evaluate(
        devset=devset(args.examples, DATASET_SEED),
        metric=answer_exact_match,
        num_threads=args.width,
        max_errors=args.examples,
    )

    def run() -> tuple[float, int]:
        result = evaluate(program)
        return float(result.score), 0

    return _measure(run, args)


# --------------------------------------------------------------------------- parent


def _run_config(engine: str, width: int, args: argparse.Namespace, sim: Any) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", engine, "--width", str(width)]
    argv += ["--examples", str(args.examples), "--base-url", sim.base_url, "--sim-pid", str(sim.process.pid)]
    started = time.perf_counter()
    measured = run_child_json(argv, timeout_s=900)
    print(f"  {engine} x{width}: {args.examples / measured['wall_s']:,.0f} examples/s "
          f"({time.perf_counter() - started:.0f} s with start-up)", file=sys.stderr)  # fmt: skip
    return {"engine": engine, "width": width, **measured}


def _rows(runs: list[dict[str, Any]], examples: int) -> tuple[list[list[Any]], float, float]:
    rate = {id(r): examples / r["wall_s"] for r in runs}
    best_dspy = max((rate[id(r)] for r in runs if r["engine"] == "dspy"), default=float("nan"))
    rows = []
    for r in runs:
        label = f"{'concurrency' if r['engine'] == 'dspex' else 'threads'} {r['width']}"
        rows.append([
            r["engine"], label, examples, r["wall_s"], rate[id(r)], 1000 * r["cpu_s"] / examples,
            1000 * r["sim_cpu_s"] / examples, r["requests"], f"{r['score']:.2f}", r["errors"],
            f"{rate[id(r)] / best_dspy:.2f}x",
        ])  # fmt: skip
    best_dspex = max((rate[id(r)] for r in runs if r["engine"] == "dspex"), default=float("nan"))
    return rows, best_dspex, best_dspy


HEADERS = [
    "engine", "in flight", "examples", "wall s", "examples/s", "CPU ms/example", "sim CPU ms/example",
    "LM requests", "score", "errors", "vs DSPy best",
]  # fmt: skip


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        child = _child_dspex if args.child == "dspex" else _child_dspy
        print(json.dumps(child(args)))
        return
    runs: list[dict[str, Any]] = []
    with start_sim(latency=args.latency) as sim:
        print(f"simulated LM at {sim.base_url} (pid {sim.process.pid})", file=sys.stderr)
        runs += [_run_config("dspex", width, args, sim) for width in args.dspex]
        runs += [_run_config("dspy", width, args, sim) for width in args.dspy]
    rows, best_dspex, best_dspy = _rows(runs, args.examples)
    print(f"Local Evaluate vs DSPy 3.4.1 Evaluate, `Predict('question -> answer')`, simulated LM at "
          f"{args.latency * 1000:.0f} ms latency, cache off, {args.examples:,} examples per configuration; "
          f"{machine_summary()}.\n")  # fmt: skip
    print(markdown_table(HEADERS, rows))
    print(f"\ndspex best {best_dspex:,.0f} examples/s = {best_dspex / best_dspy:.2f}x DSPy's best "
          f"({best_dspy:,.0f} examples/s); target >= 3x.")  # fmt: skip


if __name__ == "__main__":
    main()
