"""dspex's COPRO against DSPy's, on one simulated LM, in the same run.

Reproduce (about a minute at 1 s latency, most of it DSPy):

    .venv/bin/python bench/copro_vs_dspy.py
    .venv/bin/python bench/copro_vs_dspy.py --latencies 0.1,1 --breadth 6 --depth 2

One simulated LM subprocess per latency serves both engines, one after the other, each in a fresh child
process. Both compile ``Predict("question -> answer")`` with ``breadth`` / ``depth`` on the same 40
training examples (COPRO scores on its trainset), LM cache off, the prompt model being the task LM.
dspex runs with ``LocalExecutor(concurrency=128)``: each round's proposals at once, then all of the
round's candidates in one evaluation. DSPy with ``num_threads=16`` in ``eval_kwargs``: one ``n=``
request per round for the proposals, then one candidate after another.

Measured in the child over ``compile`` only: wall time and the simulated LM's ``completions_ok`` delta.
The best program's score is the trainset score COPRO itself reports (``candidate_programs[0]``). The
two engines' proposals are different draws (DSPy asks for ``n`` completions in one request, dspex
for one per request), so their best instructions and scores agree in expectation only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from common import machine_summary, markdown_table, run_child_json, sim_completions, start_sim

DATA_SEED, TRAIN = 1, 40


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latencies", type=_floats, default=[1.0], help="LM latencies, seconds")
    parser.add_argument("--breadth", type=int, default=6)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--child", choices=["dspex", "dspy"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    return parser


def _dspex_child(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from dspex.lm import LM
    from dspex.metrics import numeric_equal
    from dspex.modules import Predict
    from dspex.optimizers import COPRO, LocalExecutor
    from dspex.testing import arithmetic_dataset

    lm = LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False)
    optimizer = COPRO(prompt_model=lm, metric=numeric_equal("answer"), breadth=args.breadth, depth=args.depth)
    student, train = Predict("question -> answer", lm=lm), arithmetic_dataset(TRAIN, seed=DATA_SEED)
    started = time.perf_counter()
    best = asyncio.run(optimizer.acompile(student, trainset=train, executor=LocalExecutor(128)))
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "best": best.candidate_programs[0]["score"],
        "instructions": best.signature.instructions,
    }


def _dspy_child(args: argparse.Namespace) -> dict[str, Any]:
    import dspy

    from dspex.testing import arithmetic_rows

    dspy.configure(lm=dspy.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False))
    train = [dspy.Example(**row).with_inputs("question") for row in arithmetic_rows(TRAIN, seed=DATA_SEED)]

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        try:
            return int(str(prediction.answer).strip()) == int(example.answer)
        except ValueError:
            return False

    optimizer = dspy.COPRO(metric=metric, breadth=args.breadth, depth=args.depth)
    started = time.perf_counter()
    best = optimizer.compile(
        dspy.Predict("question -> answer"), trainset=train, eval_kwargs={"num_threads": 16}
    )
    wall = time.perf_counter() - started
    instructions = best.predictors()[0].signature.instructions
    return {"wall_s": wall, "best": float(best.candidate_programs[0]["score"]), "instructions": instructions}


def _child(args: argparse.Namespace) -> None:
    before = sim_completions(args.base_url)
    result = _dspex_child(args) if args.child == "dspex" else _dspy_child(args)
    result["lm_calls"] = sim_completions(args.base_url) - before
    print(json.dumps(result))


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        _child(args)
        return
    rows = []
    for latency in args.latencies:
        with start_sim(latency=latency) as sim:
            for engine in ("dspy", "dspex"):
                argv = [sys.executable, __file__, "--child", engine, "--base-url", sim.base_url]
                argv += ["--breadth", str(args.breadth), "--depth", str(args.depth)]
                found = run_child_json(argv, timeout_s=1800)
                rows.append([latency, engine, found["wall_s"], found["lm_calls"], found["best"]])
                print(f"{engine} at {latency} s: {found}", file=sys.stderr)
    print(machine_summary())
    print(markdown_table(["latency s", "engine", "wall s", "LM calls", "best train score"], rows))


if __name__ == "__main__":
    main()
