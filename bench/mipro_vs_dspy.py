"""dspex's MIPROv2 auto="light" against DSPy's, on one simulated LM, in the same run.

Reproduce (1 s latency: several minutes, most of it DSPy; --latency 0.1 for a quick look):

    .venv/bin/python bench/mipro_vs_dspy.py
    .venv/bin/python bench/mipro_vs_dspy.py --latency 0.1
    .venv/bin/python bench/mipro_vs_dspy.py --latency 0.1 --seeds 0,1,2,3,4 --data-seeds 13,21,34,55

One simulated LM subprocess serves both engines, one after the other, each in a fresh child process,
for each seed (``--seeds``, default 9,10,11: one seed's best score is a coin flip between two equally
good programs, so the means say more) on each data set (``--data-seeds``, default 13: the seed of the
simulated task's rows; DSPy's instruction proposals on one data set are much the same for every
optimizer seed, so several data sets say more than many seeds on one). Both compile
``Predict("question -> answer")`` with ``MIPROv2(auto="light", seed=S)`` (its defaults: max 4
bootstrapped / 4 labeled demos, 6 demo sets, 3 instruction candidates, 10 minibatch trials of 35
examples, a full evaluation every 5), 50 train / 100 validation examples (disjoint), exact match
on ``answer``, LM cache off; the prompt model is the task model. dspex runs with
``LocalExecutor(concurrency=N)``, DSPy with ``num_threads=T``.

Measured in the child over ``compile`` only: wall time and the simulated LM's request count (its
``completions_ok`` counter delta). The returned program is then evaluated on the 100 validation
examples with the same metric (outside the timed window); the zero-shot score is each optimizer's own
score of the default program (its trial 1 / trial 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from common import machine_summary, markdown_table, run_child_json, sim_completions, start_sim

DATA_SEED = 13
TRAIN, VAL = 50, 100


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=1.0, help="LM latency, seconds")
    parser.add_argument("--concurrency", type=int, default=256, help="dspex LocalExecutor concurrency")
    parser.add_argument("--threads", type=int, default=64, help="DSPy num_threads")
    parser.add_argument("--seeds", default="9,10,11", help="optimizer seeds, comma-separated")
    parser.add_argument(
        "--data-seeds",
        default=str(DATA_SEED),
        help="data sets (seeds of the simulated task's rows), comma-separated; every seed runs on each",
    )
    parser.add_argument("--data-seed", type=int, default=DATA_SEED, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["dspex", "dspy"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    return parser


# --------------------------------------------------------------------------- children


def _rows(data_seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from dspex.testing.task import arithmetic_rows

    rows = arithmetic_rows(TRAIN + VAL, data_seed)
    return rows[:TRAIN], rows[TRAIN:]


def _timed(compile_: Any, base_url: str) -> tuple[Any, float, int]:
    requests0 = sim_completions(base_url)
    started = time.perf_counter()
    program = compile_()
    return program, time.perf_counter() - started, sim_completions(base_url) - requests0


def _child_dspex(args: argparse.Namespace) -> dict[str, Any]:
    import dspex
    from dspex.optimizers import LocalExecutor, MIPROv2

    train, val = (
        [dspex.Example(**r).with_inputs("question") for r in rows] for rows in _rows(args.data_seed)
    )
    lm = dspex.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False)
    student = dspex.Predict("question -> answer", lm=lm)
    metric = dspex.metrics.exact_match("answer")
    optimizer = MIPROv2(metric, prompt_model=lm, auto="light", seed=args.seed)
    executor = LocalExecutor(concurrency=args.concurrency)

    def compile_() -> Any:
        return optimizer.compile(student, trainset=train, valset=val, executor=executor)

    program, wall_s, requests = _timed(compile_, args.base_url)
    history = optimizer.history
    if history is None:
        raise RuntimeError("compile returned without a history")
    searched = [t for t in history.trials if t.kind in ("full", "minibatch")]
    evaluate = dspex.Evaluate(devset=val, metric=metric, concurrency=args.concurrency)
    return {
        "wall_s": wall_s,
        "requests": requests,
        "trials": len(searched),
        "zero_shot": float(searched[0].score or 0.0),
        "val_score": float(evaluate(program).score),
        "instruction": program.signature.instructions,
        "steps": len({t.step for t in history.trials}),
    }


def _child_dspy(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    import dspy
    from dspy.evaluate import answer_exact_match

    train, val = ([dspy.Example(**r).with_inputs("question") for r in rows] for rows in _rows(args.data_seed))
    dspy.configure(lm=dspy.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False))
    student = dspy.Predict("question -> answer")
    optimizer = dspy.MIPROv2(answer_exact_match, auto="light", num_threads=args.threads, seed=args.seed)

    def compile_() -> Any:
        return optimizer.compile(student, trainset=train, valset=val)

    program, wall_s, requests = _timed(compile_, args.base_url)
    evaluate = dspy.Evaluate(devset=val, metric=answer_exact_match, num_threads=args.threads, max_errors=VAL)
    logs = program.trial_logs
    return {
        "wall_s": wall_s,
        "requests": requests,
        "trials": len(logs),
        "zero_shot": float(logs[1]["full_eval_score"]),
        "val_score": float(evaluate(program).score),
        "instruction": program.signature.instructions,
    }


# --------------------------------------------------------------------------- parent


def _run(engine: str, data_seed: int, seed: int, args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", engine, "--base-url", base_url, "--seed", str(seed)]
    argv += ["--data-seed", str(data_seed)]
    argv += ["--concurrency", str(args.concurrency), "--threads", str(args.threads)]
    measured = run_child_json(argv, timeout_s=3600)
    print(f"  {engine} data {data_seed} seed {seed}: {measured['wall_s']:.1f} s, "
          f"val {measured['val_score']:.1f}, {measured['trials']} trials, {measured['requests']} LM calls",
          file=sys.stderr)  # fmt: skip
    return {"engine": engine, "seed": seed, "data_seed": data_seed, **measured}


HEADERS = [
    "data", "seed", "engine", "in flight", "compile wall s", "LM calls", "trials", "zero-shot val",
    "best program val", "wall / DSPy wall",
]  # fmt: skip


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return sum(run[key] for run in runs) / len(runs)


def _paired(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> str:
    """The per-seed difference of best validation scores (dspex - DSPy): mean, standard error, signs."""
    diffs = [mine["val_score"] - dspys["val_score"] for mine, dspys in zip(ours, theirs, strict=True)]
    mean = sum(diffs) / len(diffs)
    spread = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5 if len(diffs) > 1 else 0.0
    higher, lower = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    return (
        f"- paired difference of best val (dspex - DSPy) over {len(diffs)} runs: mean {mean:+.2f}, "
        f"standard error {spread / len(diffs) ** 0.5:.2f}; dspex higher on {higher}, equal on "
        f"{len(diffs) - higher - lower}, lower on {lower}; per seed: " + ", ".join(f"{d:+.0f}" for d in diffs)
    )


def _per_data_set(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    """Mean best val of each engine on each data set (only when there are several)."""
    data_seeds = sorted({run["data_seed"] for run in ours})
    if len(data_seeds) < 2:
        return []
    lines = []
    for data_seed in data_seeds:
        mine = [r for r in ours if r["data_seed"] == data_seed]
        dspys = [r for r in theirs if r["data_seed"] == data_seed]
        lines.append(
            f"- data set {data_seed} ({len(mine)} seeds): best val dspex {_mean(mine, 'val_score'):.1f} "
            f"vs DSPy {_mean(dspys, 'val_score'):.1f}"
        )
    return lines


def _report(args: argparse.Namespace, ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> str:
    rows = []
    for mine, dspys in zip(ours, theirs, strict=True):
        for run in (mine, dspys):
            width = (
                f"concurrency {args.concurrency}" if run["engine"] == "dspex" else f"threads {args.threads}"
            )
            rows.append([
                run["data_seed"], run["seed"], run["engine"], width, f"{run['wall_s']:.1f}", run["requests"],
                run["trials"],
                f"{run['zero_shot']:.1f}", f"{run['val_score']:.1f}",
                f"{run['wall_s'] / dspys['wall_s']:.3f}",
            ])  # fmt: skip
    wall, dspy_wall = _mean(ours, "wall_s"), _mean(theirs, "wall_s")
    score, dspy_score = _mean(ours, "val_score"), _mean(theirs, "val_score")
    lines = [
        f"MIPROv2 auto='light': dspex `LocalExecutor` vs DSPy 3.4.1, `Predict('question -> answer')`, "
        f"{TRAIN} train / {VAL} val, exact match on `answer`, LM cache off, one simulated LM at "
        f"{args.latency * 1000:.0f} ms latency shared by both; {machine_summary()}.",
        "",
        markdown_table(HEADERS, rows),
        "",
        f"- mean over seeds {args.seeds}: dspex {wall:.1f} s vs DSPy {dspy_wall:.1f} s (ratio "
        f"{wall / dspy_wall:.3f}, {dspy_wall / wall:.1f}x faster); best val {score:.1f} vs {dspy_score:.1f}; "
        f"LM calls {_mean(ours, 'requests'):.0f} vs {_mean(theirs, 'requests'):.0f}.",
        _paired(ours, theirs),
        *_per_data_set(ours, theirs),
    ]
    for mine, dspys in zip(ours, theirs, strict=True):
        lines.append(
            f"- data {mine['data_seed']} seed {mine['seed']} best instructions: "
            f"dspex {mine['instruction']!r}; DSPy {dspys['instruction']!r}"
        )
    return "\n".join(lines)


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        print(json.dumps(_child_dspex(args) if args.child == "dspex" else _child_dspy(args)))
        return
    seeds = [int(part) for part in args.seeds.split(",") if part.strip()]
    data_seeds = [int(part) for part in args.data_seeds.split(",") if part.strip()]
    ours, theirs = [], []
    with start_sim(latency=args.latency) as sim:
        print(f"simulated LM at {sim.base_url}, {args.latency * 1000:.0f} ms latency", file=sys.stderr)
        for data_seed in data_seeds:
            for seed in seeds:
                ours.append(_run("dspex", data_seed, seed, args, sim.base_url))
                theirs.append(_run("dspy", data_seed, seed, args, sim.base_url))
    print(_report(args, ours, theirs))


if __name__ == "__main__":
    main()
