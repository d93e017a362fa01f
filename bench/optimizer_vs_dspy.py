"""dspex's BootstrapFewShotWithRandomSearch against DSPy's, on one simulated LM, in the same run.

Reproduce (about 3 minutes on a 2-core machine, most of it DSPy at 1 s latency):

    .venv/bin/python bench/optimizer_vs_dspy.py
    .venv/bin/python bench/optimizer_vs_dspy.py --latencies 0.1 --concurrency 256 --threads 64

For each LM latency, one simulated LM subprocess serves both engines, one after the other, each in a
fresh child process (DSPy's threads never share a process with our event loop). Both compile
``Predict("question -> answer")`` with the same knobs: 50 train / 200 val examples (disjoint), 8
candidate programs (plus DSPy's 3 fixed ones: zero-shot, labeled-only, unshuffled bootstrap),
``max_bootstrapped_demos=4``, ``max_labeled_demos=4``, exact match on ``answer``, LM cache off.
dspex runs with ``LocalExecutor(concurrency=N)`` (every candidate's bootstrap in shared waves, then
all candidates on the valset at once); DSPy with ``num_threads=64`` (one candidate after another).

Measured in the child over ``compile`` only: wall time and the simulated LM's request count (its
``completions_ok`` counter delta, so LM calls are what reached the LM). The returned program is then
evaluated on the 200 validation examples with the same metric (outside the timed window). The zero-shot
score is the seed -3 candidate's score from the optimizer's own ``candidate_programs``.

The simulated LM draws right/wrong from the whole request, which includes ``temperature`` (dspex sends
0.0, DSPy sends none), so the two engines see different draws of the same accuracy model: their scores
agree in expectation, not example by example.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from common import machine_summary, markdown_table, run_child_json, sim_completions, start_sim

DATA_SEED = 11
TRAIN, VAL = 50, 200
KNOBS: dict[str, Any] = {"num_candidate_programs": 8, "max_bootstrapped_demos": 4, "max_labeled_demos": 4}


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latencies", type=_floats, default=[0.1, 1.0], help="LM latencies, seconds")
    parser.add_argument("--concurrency", type=int, default=256, help="dspex LocalExecutor concurrency")
    parser.add_argument("--threads", type=int, default=64, help="DSPy num_threads")
    parser.add_argument("--child", choices=["dspex", "dspy"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    return parser


# --------------------------------------------------------------------------- children


def _rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from dspex.testing.task import arithmetic_rows

    rows = arithmetic_rows(TRAIN + VAL, DATA_SEED)
    return rows[:TRAIN], rows[TRAIN:]


def _measure(compile_: Any, evaluate: Any, base_url: str) -> dict[str, Any]:
    """Time ``compile_()`` and count its LM requests; then score the program it returns."""
    requests0 = sim_completions(base_url)
    started = time.perf_counter()
    program = compile_()
    wall_s = time.perf_counter() - started
    requests = sim_completions(base_url) - requests0
    zero_shot = next(c["score"] for c in program.candidate_programs if c["seed"] == -3)
    return {
        "wall_s": wall_s,
        "requests": requests,
        "val_score": float(evaluate(program)),
        "zero_shot": float(zero_shot),
        "candidates": len(program.candidate_programs),
    }


def _timed_executor(concurrency: int) -> Any:
    """A LocalExecutor that adds up wall time in bootstrap waves (``run``) and candidate evaluation."""
    from dspex.optimizers import LocalExecutor

    class TimedExecutor(LocalExecutor):
        phases = {"bootstrap_s": 0.0, "bootstrap_waves": 0, "evaluate_s": 0.0}

        async def run(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await super().run(*args, **kwargs)
            finally:
                self.phases["bootstrap_s"] += time.perf_counter() - started
                self.phases["bootstrap_waves"] += 1

        async def evaluate_many(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await super().evaluate_many(*args, **kwargs)
            finally:
                self.phases["evaluate_s"] += time.perf_counter() - started

    return TimedExecutor(concurrency=concurrency)


def _child_dspex(args: argparse.Namespace, concurrency: int) -> dict[str, Any]:
    import dspex
    from dspex.optimizers import BootstrapFewShotWithRandomSearch

    train, val = ([dspex.Example(**r).with_inputs("question") for r in rows] for rows in _rows())
    lm = dspex.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False)
    student = dspex.Predict("question -> answer", lm=lm)
    metric = dspex.metrics.exact_match("answer")
    optimizer = BootstrapFewShotWithRandomSearch(metric, **KNOBS)
    executor = _timed_executor(concurrency)
    evaluate = dspex.Evaluate(devset=val, metric=metric, concurrency=concurrency)

    def compile_() -> Any:
        return optimizer.compile(student, trainset=train, valset=val, executor=executor)

    measured = _measure(compile_, lambda program: evaluate(program).score, args.base_url)
    return {**measured, **executor.phases}


def _child_dspy(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    import dspy
    from dspy.evaluate import answer_exact_match

    train, val = ([dspy.Example(**r).with_inputs("question") for r in rows] for rows in _rows())
    dspy.configure(lm=dspy.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False))
    student = dspy.Predict("question -> answer")
    optimizer = dspy.BootstrapFewShotWithRandomSearch(answer_exact_match, num_threads=threads, **KNOBS)
    evaluate = dspy.Evaluate(devset=val, metric=answer_exact_match, num_threads=threads, max_errors=VAL)

    def compile_() -> Any:
        return optimizer.compile(student, trainset=train, valset=val)

    return _measure(compile_, lambda program: evaluate(program).score, args.base_url)


# --------------------------------------------------------------------------- parent


def _run(engine: str, width: int, latency: float, base_url: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", engine, "--base-url", base_url]
    argv += ["--concurrency" if engine == "dspex" else "--threads", str(width)]
    started = time.perf_counter()
    measured = run_child_json(argv, timeout_s=1800)
    took = time.perf_counter() - started
    wall, score, calls = measured["wall_s"], measured["val_score"], measured["requests"]
    print(f"  {engine} at {latency * 1000:.0f} ms: {wall:.1f} s, val {score:.1f}, {calls} LM calls "
          f"({took:.0f} s with start-up)", file=sys.stderr)  # fmt: skip
    return {"engine": engine, "width": width, "latency": latency, **measured}


def _table(runs: list[dict[str, Any]]) -> str:
    dspy_wall = {r["latency"]: r["wall_s"] for r in runs if r["engine"] == "dspy"}
    rows = []
    for r in runs:
        width = f"{'concurrency' if r['engine'] == 'dspex' else 'threads'} {r['width']}"
        ratio = r["wall_s"] / dspy_wall[r["latency"]] if r["latency"] in dspy_wall else float("nan")
        rows.append([
            f"{r['latency'] * 1000:.0f} ms", r["engine"], width, f"{r['wall_s']:.1f}", r["requests"],
            r["candidates"], f"{r['zero_shot']:.1f}", f"{r['val_score']:.1f}", f"{ratio:.3f}",
        ])  # fmt: skip
    return markdown_table(HEADERS, rows)


HEADERS = [
    "LM latency", "engine", "in flight", "compile wall s", "LM calls", "candidates", "zero-shot val",
    "best program val", "wall / DSPy wall",
]  # fmt: skip


def _verdict_line(latency: float, ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    speedup = theirs["wall_s"] / ours["wall_s"]
    return (
        f"- {latency * 1000:.0f} ms: dspex {ours['wall_s']:.1f} s vs DSPy {theirs['wall_s']:.1f} s = "
        f"{speedup:.1f}x faster; best val {ours['val_score']:.1f} vs {theirs['val_score']:.1f}. "
        f"dspex's time: {ours['bootstrap_waves']} bootstrap waves {ours['bootstrap_s']:.1f} s, "
        f"all candidates on the valset at once {ours['evaluate_s']:.1f} s."
    )


def _verdict(runs: list[dict[str, Any]]) -> str:
    by = {(r["engine"], r["latency"]): r for r in runs}
    lines = []
    for latency in sorted({r["latency"] for r in runs}):
        ours, theirs = by.get(("dspex", latency)), by.get(("dspy", latency))
        if ours and theirs:
            lines.append(_verdict_line(latency, ours, theirs))
    return "\n".join(lines)


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        dspex_child = args.child == "dspex"
        result = _child_dspex(args, args.concurrency) if dspex_child else _child_dspy(args, args.threads)
        print(json.dumps(result))
        return
    runs: list[dict[str, Any]] = []
    for latency in args.latencies:
        with start_sim(latency=latency) as sim:
            print(f"simulated LM at {sim.base_url}, {latency * 1000:.0f} ms latency", file=sys.stderr)
            runs.append(_run("dspex", args.concurrency, latency, sim.base_url))
            runs.append(_run("dspy", args.threads, latency, sim.base_url))
    knobs = ", ".join(f"{k}={v}" for k, v in KNOBS.items())
    print(f"BootstrapFewShotWithRandomSearch: dspex `LocalExecutor` vs DSPy 3.4.1, "
          f"`Predict('question -> answer')`, {TRAIN} train / {VAL} val, {knobs}, exact match on `answer`, "
          f"LM cache off, one simulated LM per latency shared by both; {machine_summary()}.\n")  # fmt: skip
    print(_table(runs))
    print(f"\n{_verdict(runs)}\n\nTarget (issue 5): at 1 s latency, a fifth of DSPy's wall time or less "
          "(ratio <= 0.200) with a best validation score at least as high.\n")  # fmt: skip
    print(NOTES)


NOTES = """Notes:
- Wall time and LM calls cover `compile` only (the simulated LM's `completions_ok` counter delta); the
  returned program's validation score is measured afterwards on the same 200 examples with the same
  metric. Zero-shot val is the seed -3 candidate's score as each optimizer reported it.
- The simulated LM decides right/wrong from the whole request including `temperature`: dspex sends
  0.0, DSPy sends none. The two engines therefore draw different (equally likely) outcomes from the
  same accuracy model (45% zero-shot, +10 points per correct demo up to 4): scores agree in
  expectation, not example by example, and the bootstrapped demos differ.
- dspex bootstraps every candidate in shared waves and then evaluates all candidates on the valset
  in one `evaluate_many` under one concurrency bound; DSPy does one candidate after another, each
  bootstrap sequential and each evaluation on its thread pool.
- Each engine runs in a fresh child process; the load average in the header includes other work on
  the machine. Reproduce: `.venv/bin/python bench/optimizer_vs_dspy.py`."""


if __name__ == "__main__":
    main()
