"""The code sandbox: dspex's Deno + Pyodide interpreter against DSPy 3.4.1's, in the same run.

Reproduce (about 3-5 minutes on a 2-core machine, most of it cold starts):

    .venv/bin/python bench/sandbox_vs_dspy.py
    .venv/bin/python bench/sandbox_vs_dspy.py --starts 3 --executions 200 --examples 40 --threads 8

Three measurements, each engine in turn in this process (the interpreters are child processes):

1. **Cold start**: constructing an interpreter and running its first ``print(1 + 2)``, ``--starts`` times.
2. **Warm execution**: ``--executions`` runs of a two-line snippet in one started interpreter (p50, p95).
3. **RLM examples/s**: ``RLM("question -> answer", max_iters=3)`` over ``--examples`` arithmetic
   questions on the simulated LM (100 ms latency; it answers RLM's prompts with code that computes the
   answer and calls ``SUBMIT``), ``--threads`` examples at once: DSPy's ``Evaluate`` with that many
   threads, dspex's with that concurrency. Both RLMs make one interpreter per call by default (a cold
   start per example); dspex is also measured with a ``SandboxPool`` of ``--pool`` warm processes, what
   ``dspex worker predict --sandbox-pool N`` uses.

DSPy's runner (``dspy/primitives/runner.js``) imports ``readLines`` from deno.land, which this machine
cannot reach. The bench copies DSPy's installed runner into a temporary folder, points that one import
at a small local ``readLines`` written here, and gives DSPy the command through its ``deno_command``;
both engines then run the same Deno binary and the same cached ``npm:pyodide`` (``DENO_DIR`` under
``~/.cache/dspex/deno``, ``--cached-only``). Nothing else of DSPy's runner changes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import machine_summary, markdown_table, start_sim

DATASET_SEED = 11
LATENCY_HEADERS = ["engine", "cold start s (median)", "range", "warm p50 ms", "warm p95 ms"]
SNIPPET = "x = 2 + 3\nprint(x * 7)"
DSPY_READLINES_IMPORT = 'import { readLines } from "https://deno.land/std@0.186.0/io/mod.ts";'
# An async line reader over Deno's stdin, standing in for deno.land's std/io readLines.
LOCAL_READLINES = """\
export async function* readLines(reader) {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of reader.readable) {
    pending += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = pending.indexOf("\\n")) >= 0) {
      yield pending.slice(0, end).replace(/\\r$/, "");
      pending = pending.slice(end + 1);
    }
  }
  if (pending) yield pending;
}
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=3, help="cold starts per engine")
    parser.add_argument("--executions", type=int, default=200, help="warm executions per engine")
    parser.add_argument("--examples", type=int, default=40, help="RLM examples per configuration")
    parser.add_argument("--threads", type=int, default=8, help="RLM examples in flight")
    parser.add_argument("--pool", type=int, default=4, help="warm processes in dspex's SandboxPool")
    parser.add_argument("--latency", type=float, default=0.1, help="simulated LM latency, seconds")
    return parser


@contextmanager
def dspy_offline_command() -> Iterator[list[str]]:
    """DSPy's runner with its one deno.land import served locally, as a ``deno_command``."""
    import dspy.primitives.python_interpreter as dspy_interpreter

    from dspex.sandbox.install import default_deno_dir, deno_env, find_deno

    runner = Path(dspy_interpreter.__file__).with_name("runner.js").read_text()
    if DSPY_READLINES_IMPORT not in runner:
        raise SystemExit("DSPy's runner.js no longer imports readLines from deno.land: update this bench")
    folder = Path(tempfile.mkdtemp(prefix="dspy-runner-"))
    try:
        (folder / "readlines.js").write_text(LOCAL_READLINES)
        patched = runner.replace(DSPY_READLINES_IMPORT, 'import { readLines } from "./readlines.js";')
        (folder / "runner.js").write_text(patched)
        deno_dir = str(default_deno_dir())
        os.environ.update(deno_env(default_deno_dir()))  # DSPy's Deno inherits it: the same cache as ours
        yield [
            str(find_deno()), "run", "--cached-only", "--no-config", "--no-lock", "--node-modules-dir=false",
            f"--allow-read={folder},{deno_dir}", str(folder / "runner.js"),
        ]  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cold_starts(make: Callable[[], Any], starts: int) -> list[float]:
    seconds = []
    for _ in range(starts):
        began = time.perf_counter()
        interpreter = make()
        try:
            interpreter.execute("print(1 + 2)")
            seconds.append(time.perf_counter() - began)
        finally:
            interpreter.shutdown()
    return seconds


def warm_executions(make: Callable[[], Any], executions: int) -> list[float]:
    interpreter = make()
    try:
        interpreter.execute("print(0)")
        seconds = []
        for _ in range(executions):
            began = time.perf_counter()
            interpreter.execute(SNIPPET)
            seconds.append(time.perf_counter() - began)
        return seconds
    finally:
        interpreter.shutdown()


def rlm_dspy(base_url: str, factory: Callable[[], Any], args: argparse.Namespace) -> tuple[float, float]:
    import dspy
    from dspy.evaluate import answer_exact_match

    from dspex.testing.task import arithmetic_rows

    lm = dspy.LM("openai/sim", api_base=base_url, api_key="sim", cache=False)
    devset = [
        dspy.Example(**row).with_inputs("question") for row in arithmetic_rows(args.examples, DATASET_SEED)
    ]
    program = dspy.RLM("question -> answer", max_iters=3, interpreter_factory=factory)
    evaluate = dspy.Evaluate(
        devset=devset, metric=answer_exact_match, num_threads=args.threads, max_errors=args.examples
    )
    with dspy.context(lm=lm):
        began = time.perf_counter()
        result = evaluate(program)
    return time.perf_counter() - began, float(result.score)


def rlm_dspex(
    base_url: str, factory: Callable[[], Any] | None, args: argparse.Namespace
) -> tuple[float, float]:
    import dspex
    from dspex.testing.task import arithmetic_dataset

    lm = dspex.LM("openai/sim", api_base=base_url, api_key="sim", cache=False)
    program = dspex.RLM("question -> answer", max_iters=3, interpreter_factory=factory)
    evaluate = dspex.Evaluate(
        devset=arithmetic_dataset(args.examples, DATASET_SEED),
        metric=dspex.metrics.exact_match("answer"),
        concurrency=args.threads,
        max_errors=args.examples,
    )
    with dspex.context(lm=lm):
        began = time.perf_counter()
        result = evaluate(program)
    return time.perf_counter() - began, float(result.score)


def _latency_row(engine: str, starts: list[float], warm: list[float]) -> list[Any]:
    return [
        engine, f"{statistics.median(starts):.2f}", f"{min(starts):.2f}-{max(starts):.2f}",
        f"{1000 * _percentile(warm, 0.5):.2f}", f"{1000 * _percentile(warm, 0.95):.2f}",
    ]  # fmt: skip


def main() -> None:
    args = _parser().parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at DSPy's import
    from dspy.primitives.python_interpreter import PythonInterpreter as DspyInterpreter

    from dspex.primitives.python_interpreter import PythonInterpreter
    from dspex.sandbox.pool import SandboxPool

    with dspy_offline_command() as command:

        def dspy_make() -> Any:
            return DspyInterpreter(deno_command=command)

        print("cold starts and warm executions...", file=sys.stderr)
        latency_rows = [
            _latency_row(
                "dspy", cold_starts(dspy_make, args.starts), warm_executions(dspy_make, args.executions)
            ),
            _latency_row(
                "dspex",
                cold_starts(PythonInterpreter, args.starts),
                warm_executions(PythonInterpreter, args.executions),
            ),
        ]
        rlm_rows = []
        with start_sim(latency=args.latency) as sim:
            for label, run in (
                ("dspy, an interpreter per call", lambda: rlm_dspy(sim.base_url, dspy_make, args)),
                ("dspex, an interpreter per call", lambda: rlm_dspex(sim.base_url, None, args)),
                (f"dspex, SandboxPool({args.pool})", lambda: _pooled(sim.base_url, args, SandboxPool)),
            ):
                print(f"RLM: {label}...", file=sys.stderr)
                wall_s, score = run()
                rlm_rows.append(
                    [label, args.examples, f"{wall_s:.1f}", f"{args.examples / wall_s:.2f}", f"{score:.2f}"]
                )
    dspy_rate = float(rlm_rows[0][3])
    for row in rlm_rows:
        row.append(f"{float(row[3]) / dspy_rate:.2f}x")
    print(f"Sandbox, dspex vs DSPy 3.4.1 (same Deno and Pyodide); {machine_summary()}.\n")
    print(
        markdown_table(
            ["engine", "cold start s (median)", "range", "warm p50 ms", "warm p95 ms"], latency_rows
        )
    )
    print(f"\nRLM on the simulated LM at {args.latency * 1000:.0f} ms, {args.threads} examples in flight:\n")
    print(markdown_table(["configuration", "examples", "wall s", "examples/s", "score", "vs DSPy"], rlm_rows))


def _pooled(base_url: str, args: argparse.Namespace, pool_type: Any) -> tuple[float, float]:
    pool = pool_type(size=args.pool)
    try:
        pool.start(wait=True)  # warming is start-up cost, as in a worker: not in the measured window
        return rlm_dspex(base_url, pool, args)
    finally:
        pool.close()


if __name__ == "__main__":
    main()
