"""dspex's GEPA against DSPy's (3.4.1), ``auto="light"``, on one simulated LM, in the same run (not in CI).

Reproduce (several minutes per latency and seed, most of it DSPy at 1 s):

    .venv/bin/python bench/gepa_vs_dspy.py                                   # 0.1 s and 1 s, seeds 0,1,2
    .venv/bin/python bench/gepa_vs_dspy.py --latencies 0.1 --seeds 0

One simulated LM subprocess per latency serves both engines, one after the other, each in a fresh
child process. Both compile ``Predict("question -> answer")`` with ``auto="light"`` on the same 30
training / 20 validation examples, LM cache off, the reflection LM being the simulated LM too. The
task is :mod:`dspex.testing.gepa_task`: for seed ``s`` the metric's feedback names
``secret_phrase(s)``, which raises the simulated LM's accuracy when the instructions carry it; the
GEPA seed is ``s`` as well. dspex runs with ``num_threads=64`` (runs on the event loop), DSPy with
``num_threads=16`` (threads). ``--dspex-proposals N`` lets dspex evaluate N proposals per
iteration together (gepa's ``IndependentSampling``): a different search at the same metric-call
budget, fewer and wider iterations.

Measured in the child: wall time over ``compile`` only, the simulated LM's ``completions_ok`` delta,
and the held-out score (percent correct on 50 other examples, one evaluation after compile).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from common import machine_summary, markdown_table, run_child_json, sim_completions, start_sim

TRAIN, VAL, TEST = 30, 20, 50
TRAIN_SEED, VAL_SEED, TEST_SEED = 11, 12, 13


def _numbers(kind: Any) -> Any:
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latencies", type=_numbers(float), default=[0.1, 1.0], help="LM latencies, s")
    parser.add_argument("--seeds", type=_numbers(int), default=[0, 1, 2], help="task and GEPA seeds")
    parser.add_argument(
        "--dspex-proposals",
        type=int,
        default=1,
        help="dspex only: gepa's IndependentSampling(N), N proposals per iteration evaluated together "
        "(1: gepa's default single mutation, the like-for-like comparison)",
    )
    parser.add_argument("--child", choices=["dspex", "dspy"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    return parser


def _dspex_child(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from gepa.strategies.proposal_sampling import IndependentSampling

    from dspex.configuration import context
    from dspex.evaluate import Evaluate
    from dspex.lm import LM
    from dspex.modules import Predict
    from dspex.optimizers import GEPA
    from dspex.testing import arithmetic_dataset
    from dspex.testing.gepa_task import phrase_feedback_metric, score_metric

    lm = LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False)
    metric = phrase_feedback_metric(args.seed)
    sampling = IndependentSampling(args.dspex_proposals) if args.dspex_proposals > 1 else None
    optimizer = GEPA(
        metric, auto="light", reflection_lm=lm, num_threads=64, seed=args.seed, sampling_strategy=sampling
    )
    train, val = arithmetic_dataset(TRAIN, seed=TRAIN_SEED), arithmetic_dataset(VAL, seed=VAL_SEED)

    async def go() -> dict[str, Any]:
        with context(lm=lm):
            started = time.perf_counter()
            best = await optimizer.acompile(Predict("question -> answer"), trainset=train, valset=val)
            wall = time.perf_counter() - started
            test = arithmetic_dataset(TEST, seed=TEST_SEED)
            held_out = await Evaluate(devset=test, metric=score_metric, num_threads=64).acall(best)
        return {
            "wall_s": wall,
            "held_out": float(held_out.score),
            "instructions": best.signature.instructions,
        }

    return asyncio.run(go())


def _dspy_child(args: argparse.Namespace) -> dict[str, Any]:
    import dspy

    from dspex.testing import arithmetic_rows
    from dspex.testing.task import secret_phrase

    lm = dspy.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False)
    dspy.configure(lm=lm)
    phrase = secret_phrase(args.seed)

    def examples(n: int, seed: int) -> list[Any]:
        return [dspy.Example(**row).with_inputs("question") for row in arithmetic_rows(n, seed=seed)]

    def correct(example: Any, prediction: Any) -> bool:
        return str(prediction.answer).strip() == str(example.answer)

    def metric(
        example: Any, prediction: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> Any:
        if correct(example, prediction):
            return dspy.Prediction(score=1.0, feedback="correct.")
        got = str(prediction.answer).strip()
        feedback = f'wrong: expected {example.answer}, got {got}. Instructions that say "{phrase}" do better.'
        return dspy.Prediction(score=0.0, feedback=feedback)

    optimizer = dspy.GEPA(metric=metric, auto="light", reflection_lm=lm, num_threads=16, seed=args.seed)
    started = time.perf_counter()
    best = optimizer.compile(
        dspy.Predict("question -> answer"),
        trainset=examples(TRAIN, TRAIN_SEED),
        valset=examples(VAL, VAL_SEED),
    )
    wall = time.perf_counter() - started
    evaluate = dspy.Evaluate(
        devset=examples(TEST, TEST_SEED), metric=lambda e, p, t=None: correct(e, p), num_threads=16
    )
    held_out = evaluate(best)
    instructions = best.predictors()[0].signature.instructions
    return {"wall_s": wall, "held_out": float(held_out.score), "instructions": instructions}


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
            for seed in args.seeds:
                found: dict[str, dict[str, Any]] = {}
                for engine in ("dspy", "dspex"):
                    argv = [sys.executable, __file__, "--child", engine, "--base-url", sim.base_url]
                    argv += ["--seed", str(seed), "--dspex-proposals", str(args.dspex_proposals)]
                    found[engine] = run_child_json(argv, timeout_s=7200)
                    print(f"{engine} at {latency} s, seed {seed}: {found[engine]}", file=sys.stderr)
                theirs, ours = found["dspy"], found["dspex"]
                ratio = ours["wall_s"] / theirs["wall_s"] if theirs["wall_s"] else float("nan")
                rows.append([
                    latency, seed, theirs["wall_s"], ours["wall_s"], ratio,
                    theirs["held_out"], ours["held_out"], theirs["lm_calls"], ours["lm_calls"],
                ])  # fmt: skip
    print(machine_summary())
    headers = ["latency s", "seed", "dspy wall s", "dspex wall s", "dspex/dspy", "dspy held-out %",
               "dspex held-out %", "dspy LM calls", "dspex LM calls"]  # fmt: skip
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
