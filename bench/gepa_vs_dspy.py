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
``num_threads=16`` (threads); dspex at its defaults otherwise (``reuse_runs`` on: a candidate's run
on an example is made once and reused, and the parents' minibatches of the next iterations are run
ahead together; ``speculate`` on: the next iterations' reflections and children are made ahead,
and the parents the next iterations may select run while a new candidate is scored on the valset;
gepa's decisions and metric-call count are unchanged). ``--dspex-proposals N``
lets dspex evaluate N proposals per iteration together (gepa's ``IndependentSampling`` or
``SameParentSampling``, ``--dspex-sampling``; ``--dspex-selection best``: gepa's
``BestImprovement``): a different search at the same metric-call budget, fewer and wider iterations.

The simulated reflection LM draws its revisions from what it is shown (the current instruction and
the examples' feedback), not from the wording of the proposer's prompt (:mod:`dspex.testing._reflect`),
so two engines that make the same search decisions propose the same texts; the table's "same search"
column says whether they did (the same final instructions after the same kinds of iterations).

Measured in the child: wall time over ``compile`` only, the simulated LM's ``completions_ok`` delta,
the held-out score (percent correct on 50 other examples, one evaluation after compile), and, from a
gepa callback both engines take, where the iterations' time went (:class:`_Phases`): how many
iterations were skipped (perfect parent minibatch), rejected or accepted, how many reflections
were made, and the seconds spent on the parents' minibatches, the reflections, the children's
minibatches and the valset evaluations. For dspex also: the CPU seconds of the child process over
``compile`` (``cpu_s``), its serial LM round trips (``waves``: overlapping batches of runs and
reflections merged, :class:`_Waves`) and the compile time with none in flight (``idle_s``).
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
    parser.add_argument(
        "--dspex-sampling",
        choices=["independent", "same_parent"],
        default="independent",
        help="with --dspex-proposals N > 1: gepa's IndependentSampling(N) or SameParentSampling(N)",
    )
    parser.add_argument(
        "--dspex-selection",
        choices=["all", "best"],
        default="all",
        help="which of an iteration's children that pass gepa's acceptance rule are scored on the "
        "valset: all (gepa's AllImprovements) or the best one (gepa's BestImprovement)",
    )
    parser.add_argument(
        "--dspex-reuse-runs",
        choices=["on", "off"],
        default="on",
        help="dspex's reuse_runs (off: every evaluation calls the LM again, no parent prefetch)",
    )
    parser.add_argument(
        "--dspex-speculate",
        choices=["on", "off"],
        default="on",
        help="dspex's speculate (off: the next iterations' reflections and child runs are not made ahead)",
    )
    parser.add_argument(
        "--engines",
        type=lambda text: [part for part in text.split(",") if part],
        default=["dspy", "dspex"],
        help="which engines to run (dspy,dspex); the table needs both",
    )
    parser.add_argument("--child", choices=["dspex", "dspy"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    return parser


class _Phases:
    """A gepa callback (both engines take gepa's callbacks): where an iteration's wall time goes.

    Per iteration its kind (``skipped``: the parent's minibatch was perfect, no reflection;
    ``rejected``; ``accepted``; ``merge``) and the time of each phase: the parents' minibatch
    evaluation, the reflection(s), the children's minibatch evaluation, and the rest (the valset
    evaluation of accepted children, merges).
    """

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.started = 0.0
        self.mark = 0.0
        self.kind = ""

    def _phase(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.mark
        self.mark = now

    def on_iteration_start(self, event: Any) -> None:
        self.started = self.mark = time.perf_counter()
        self.kind = "rejected"

    def on_evaluation_start(self, event: Any) -> None:
        self._phase("other" if event["candidate_idx"] is not None else "reflection")

    def on_evaluation_end(self, event: Any) -> None:
        self._phase("parent minibatch" if event["candidate_idx"] is not None else "child minibatch")

    def on_evaluation_skipped(self, event: Any) -> None:
        if event["reason"] == "all_scores_perfect" and self.kind == "rejected":
            self.kind = "skipped"

    def on_candidate_accepted(self, event: Any) -> None:
        self.kind = "accepted"
        self.kinds["children accepted"] = self.kinds.get("children accepted", 0) + 1

    def on_proposal_end(self, event: Any) -> None:
        self.kinds["proposals"] = self.kinds.get("proposals", 0) + 1

    def on_merge_attempted(self, event: Any) -> None:
        self.kind = "merge"

    def on_iteration_end(self, event: Any) -> None:
        self._phase("valset / merge" if self.kind in ("accepted", "merge") else "other")
        self.kinds[self.kind] = self.kinds.get(self.kind, 0) + 1
        self.seconds["iterations"] = self.seconds.get("iterations", 0.0) + time.perf_counter() - self.started

    def summary(self) -> dict[str, Any]:
        return {"kinds": self.kinds, "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


class _Waves:
    """dspex's serial LM round trips: the intervals of its adapter's LM-calling methods (a batch of
    runs, a reflection), overlapping ones merged into one wave. ``idle_s``: compile time with no
    such call in flight (gepa's bookkeeping and dspex's predictions between waves)."""

    METHODS = ("_run_batch", "reflect")

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.spans: list[tuple[float, float]] = []

    def install(self, adapter_class: Any) -> None:
        for name in self.METHODS:
            setattr(adapter_class, name, self._timed(getattr(adapter_class, name)))

    def _timed(self, method: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                with self.lock:
                    self.spans.append((started, time.perf_counter()))

        return timed

    def summary(self, started: float, ended: float) -> dict[str, Any]:
        merged: list[list[float]] = []
        for start, end in sorted(self.spans):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        busy = sum(end - start for start, end in merged)
        return {"waves": len(merged), "idle_s": round(ended - started - busy, 3)}


def _dspex_child(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from gepa.strategies.proposal_sampling import IndependentSampling, SameParentSampling
    from gepa.strategies.proposal_selection import BestImprovement

    from dspex.configuration import context
    from dspex.evaluate import Evaluate
    from dspex.lm import LM
    from dspex.modules import Predict
    from dspex.optimizers import GEPA
    from dspex.optimizers.gepa.adapter import DspyAdapter
    from dspex.testing import arithmetic_dataset
    from dspex.testing.gepa_task import phrase_feedback_metric, score_metric

    lm = LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False)
    metric = phrase_feedback_metric(args.seed)
    n = args.dspex_proposals
    sampler = IndependentSampling if args.dspex_sampling == "independent" else SameParentSampling
    sampling = sampler(n) if n > 1 else None
    selection = BestImprovement() if args.dspex_selection == "best" else None
    phases, waves = _Phases(), _Waves()
    waves.install(DspyAdapter)
    optimizer = GEPA(
        metric,
        auto="light",
        reflection_lm=lm,
        num_threads=64,
        seed=args.seed,
        sampling_strategy=sampling,
        selection_strategy=selection,
        reuse_runs=args.dspex_reuse_runs == "on",
        speculate=args.dspex_speculate == "on",
        gepa_kwargs={"callbacks": [phases]},
    )
    train, val = arithmetic_dataset(TRAIN, seed=TRAIN_SEED), arithmetic_dataset(VAL, seed=VAL_SEED)

    async def go() -> dict[str, Any]:
        with context(lm=lm):
            started, cpu_started = time.perf_counter(), time.process_time()
            run = optimizer.start(Predict("question -> answer"), trainset=train, valset=val)
            best = await run.run_to_end()
            ended, cpu = time.perf_counter(), time.process_time() - cpu_started
            test = arithmetic_dataset(TEST, seed=TEST_SEED)
            held_out = await Evaluate(devset=test, metric=score_metric, num_threads=64).acall(best)
        return {
            "wall_s": ended - started,
            "cpu_s": round(cpu, 3),
            **waves.summary(started, ended),
            "held_out": float(held_out.score),
            "instructions": best.signature.instructions,
            "phases": phases.summary(),
            "speculated": _speculated(run),
        }

    return asyncio.run(go())


def _speculated(run: Any) -> dict[str, int] | None:
    """Reflections made ahead, how many an iteration took, how many iterations asked themselves."""
    proposals = run.parts.engine.adapter.proposals
    if proposals is None:
        return None
    return {"made": proposals.made, "used": proposals.used, "asked at the time": proposals.waited}


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

    phases = _Phases()
    optimizer = dspy.GEPA(
        metric=metric,
        auto="light",
        reflection_lm=lm,
        num_threads=16,
        seed=args.seed,
        gepa_kwargs={"callbacks": [phases]},
    )
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
    return {
        "wall_s": wall,
        "held_out": float(held_out.score),
        "instructions": instructions,
        "phases": phases.summary(),
    }


def _child(args: argparse.Namespace) -> None:
    before = sim_completions(args.base_url)
    result = _dspex_child(args) if args.child == "dspex" else _dspy_child(args)
    result["lm_calls"] = sim_completions(args.base_url) - before
    print(json.dumps(result))


def _same_search(theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    """ "yes" when both engines ended with the same instructions after the same iterations (as many
    proposals, accepted children, skipped and rejected iterations), else "no"."""
    same = theirs["instructions"] == ours["instructions"]
    return "yes" if same and theirs["phases"]["kinds"] == ours["phases"]["kinds"] else "no"


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
                for engine in args.engines:
                    argv = [sys.executable, __file__, "--child", engine, "--base-url", sim.base_url]
                    argv += ["--seed", str(seed), "--dspex-proposals", str(args.dspex_proposals)]
                    argv += [
                        "--dspex-sampling",
                        args.dspex_sampling,
                        "--dspex-selection",
                        args.dspex_selection,
                    ]
                    argv += ["--dspex-reuse-runs", args.dspex_reuse_runs]
                    argv += ["--dspex-speculate", args.dspex_speculate]
                    found[engine] = run_child_json(argv, timeout_s=7200)
                    print(f"{engine} at {latency} s, seed {seed}: {found[engine]}", file=sys.stderr)
                if set(found) != {"dspy", "dspex"}:
                    continue
                theirs, ours = found["dspy"], found["dspex"]
                ratio = ours["wall_s"] / theirs["wall_s"] if theirs["wall_s"] else float("nan")
                rows.append([
                    latency, seed, theirs["wall_s"], ours["wall_s"], ratio,
                    theirs["held_out"], ours["held_out"], _same_search(theirs, ours),
                    theirs["lm_calls"], ours["lm_calls"],
                ])  # fmt: skip
    print(machine_summary())
    headers = ["latency s", "seed", "dspy wall s", "dspex wall s", "dspex/dspy", "dspy held-out %",
               "dspex held-out %", "same search", "dspy LM calls", "dspex LM calls"]  # fmt: skip
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
