"""dspex's SIMBA against DSPy's, on one simulated LM, in the same run.

Reproduce (about 1.5 minutes per seed at 1 s latency, most of it DSPy):

    .venv/bin/python bench/simba_vs_dspy.py
    .venv/bin/python bench/simba_vs_dspy.py --latency 0.1,1 --seeds 0,1,2

One simulated LM subprocess per latency serves both engines, one after the other, each in a fresh child
process. Both compile ``Predict("question -> answer")`` with ``SIMBA(bsize=16, num_candidates=4,
max_steps=4)`` and the same seed on the same 40 training examples, exact match on ``answer``, LM cache
off, the rule-writing LM being the task LM. dspex runs with ``LocalExecutor(concurrency=128)``: a
step's ``num_candidates x bsize`` runs in one call, its rule requests together, its new programs scored
in one evaluation. DSPy with ``num_threads=16``: the same phases, each through its pool of 16 threads.

Measured in the child over ``compile`` only: wall time and the simulated LM's ``completions_ok`` delta.
The returned program is then scored on 100 other examples (outside the timed window), and we report how
many demos it has and how many of the task's bonus phrases its instructions carry (which only a rule can
add). The two engines draw different outcomes from the same accuracy model (dspex sends each rollout's
``seed``; DSPy's ``rollout_id`` never reaches the LM, so its rollouts of one program agree), and DSPy's
rule requests ask for a ``dict`` output named ``module_advice``, which the simulated LM answers with an
empty object: on the simulated LM, DSPy's rule strategy appends nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from common import machine_summary, markdown_table, run_child_json, sim_completions, start_sim

DATA_SEED, VAL_SEED = 1, 2
TRAIN, VAL = 40, 100
KNOBS: dict[str, Any] = {"bsize": 16, "num_candidates": 4, "max_steps": 4}
DSPY_THREADS, DSPEX_CONCURRENCY = 16, 128


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=_floats, default=[1.0], help="LM latencies in s, comma-separated")
    parser.add_argument("--seeds", type=_ints, default=[0], help="SIMBA seeds, the same for both engines")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # a child's one seed
    parser.add_argument("--child", choices=["dspex", "dspy"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    return parser


def _dspex_child(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from dspex.lm import LM
    from dspex.metrics import numeric_equal
    from dspex.modules import Predict
    from dspex.optimizers import SIMBA, LocalExecutor
    from dspex.testing import arithmetic_dataset

    lm = LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False)
    metric = numeric_equal("answer")
    train, val = arithmetic_dataset(TRAIN, seed=DATA_SEED), arithmetic_dataset(VAL, seed=VAL_SEED)
    optimizer = SIMBA(metric, prompt_model=lm, **KNOBS)
    student = Predict("question -> answer", lm=lm)
    executor = LocalExecutor(DSPEX_CONCURRENCY)
    started = time.perf_counter()
    best = asyncio.run(optimizer.acompile(student, trainset=train, seed=args.seed, executor=executor))
    wall, calls = time.perf_counter() - started, sim_completions(args.base_url)
    [result] = asyncio.run(executor.evaluate_many([best], val, metric))
    return {
        "wall_s": wall,
        "calls_at_end": calls,
        "val": result.score,
        "demos": len(best.demos),
        "instructions": best.signature.instructions,
    }


def _dspy_child(args: argparse.Namespace) -> dict[str, Any]:
    import dspy

    from dspex.testing import arithmetic_rows

    dspy.configure(lm=dspy.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False))
    train = [dspy.Example(**row).with_inputs("question") for row in arithmetic_rows(TRAIN, seed=DATA_SEED)]
    val = [dspy.Example(**row).with_inputs("question") for row in arithmetic_rows(VAL, seed=VAL_SEED)]

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        try:
            return float(int(str(prediction.answer).strip()) == int(example.answer))
        except (ValueError, AttributeError):
            return 0.0

    optimizer = dspy.SIMBA(metric=metric, num_threads=DSPY_THREADS, **KNOBS)
    started = time.perf_counter()
    best = optimizer.compile(dspy.Predict("question -> answer"), trainset=train, seed=args.seed)
    wall, calls = time.perf_counter() - started, sim_completions(args.base_url)
    score = dspy.Evaluate(devset=val, metric=metric, num_threads=DSPY_THREADS * 2)(best).score
    predictor = best.predictors()[0]
    return {
        "wall_s": wall,
        "calls_at_end": calls,
        "val": float(score),
        "demos": len(predictor.demos),
        "instructions": predictor.signature.instructions,
    }


def _child(args: argparse.Namespace) -> None:
    before = sim_completions(args.base_url)
    from dspex.testing.task import instruction_phrases_in

    result = _dspex_child(args) if args.child == "dspex" else _dspy_child(args)
    result["lm_calls"] = result.pop("calls_at_end") - before
    result["phrases"] = instruction_phrases_in(result["instructions"])
    print(json.dumps(result))


def _run(engine: str, seed: int, base_url: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", engine, "--base-url", base_url, "--seed", str(seed)]
    return dict(run_child_json(argv, timeout_s=1800))


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        _child(args)
        return
    rows, notes = [], []
    for latency in args.latency:
        with start_sim(latency=latency) as sim:
            for seed in args.seeds:
                for engine in ("dspy", "dspex"):
                    found = _run(engine, seed, sim.base_url)
                    measured = [found[key] for key in ("wall_s", "lm_calls", "val", "demos", "phrases")]
                    rows.append([latency, seed, engine, *measured])
                    notes.append(
                        f"- {engine}, {latency} s, seed {seed}: best instructions {found['instructions']!r}"
                    )
                    print(f"{engine} at {latency} s, seed {seed}: {found}", file=sys.stderr)
    print(machine_summary())
    print()
    headers = [
        "latency s",
        "seed",
        "engine",
        "compile wall s",
        "LM calls",
        "best program val",
        "demos",
        "bonus phrases",
    ]
    print(markdown_table(headers, rows))
    print()
    print("\n".join([*_summaries(rows, args.latency), *notes]))


def _summaries(rows: list[list[Any]], latencies: list[float]) -> list[str]:
    """Per latency: both engines' mean wall time and validation score over the seeds."""
    lines = []
    for latency in latencies:
        by_engine = {
            engine: [row for row in rows if row[0] == latency and row[2] == engine]
            for engine in ("dspy", "dspex")
        }
        wall = {engine: sum(r[3] for r in found) / len(found) for engine, found in by_engine.items()}
        val = {engine: sum(r[5] for r in found) / len(found) for engine, found in by_engine.items()}
        lines.append(
            f"- {latency} s, mean over {len(by_engine['dspy'])} seed(s): dspex {wall['dspex']:.1f} s vs DSPy "
            f"{wall['dspy']:.1f} s (ratio {wall['dspex'] / wall['dspy']:.2f}); best program val "
            f"{val['dspex']:.1f} vs {val['dspy']:.1f}"
        )
    return lines


if __name__ == "__main__":
    main()
