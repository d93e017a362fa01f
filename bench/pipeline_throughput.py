"""Throughput of the whole pipeline (client -> Kafka -> predictors -> scorer -> aggregator -> client).

Reproduce (about 7-9 minutes on a 2-core machine):

    .venv/bin/python bench/pipeline_throughput.py
    .venv/bin/python bench/pipeline_throughput.py --predictors 3 --concurrency 512 --fast-examples 4000
    .venv/bin/python bench/pipeline_throughput.py --mode defaults   # what a new user gets (~6 minutes)
    .venv/bin/python bench/pipeline_throughput.py --mode defaults --defaults-rounds 3   # medians

``--mode defaults`` asks what the workers' default flags are worth: one job per LM latency (6,000
examples at 100 ms, 10,000 at 1 s) with predictors on their default flags, and the same job with the
tuned flags (``--concurrency C --lm-initial-limit C``), each job on a stack of its own (a fresh
broker, fresh workers, so cold LM limiters: what a new user's first job meets), DSPy's Evaluate on the
same simulated LM first. ``--defaults-rounds N`` runs each of the four jobs N times, the two flag sets
alternating and each round reversing the order of the one before, and reports each configuration's
median job: one job per configuration moved by up to 18% against the other from run to run on this
machine (bench/RESULTS.md). The rest of this text is about the default ``--mode tuned``.

One run starts everything it measures and stops it at the end (also on failure or SIGTERM): a
simulated LM subprocess (a simulation, not a model), a dev Kafka broker of its own on a free port
with a temporary data dir, the topics, then 1 aggregator, 1 scorer and N predictor processes
(``dspex worker ...``, each predictor with ``--concurrency C`` and ``--lm-initial-limit C``). DSPy
3.4.1's Evaluate runs first, in child processes (``bench/evaluate_vs_dspy.py``'s child mode), on the
same simulated LM before the pipeline starts, so that idle workers do not take its CPU. Then, after
the workers own their partitions, ``dspex.Client.evaluate`` runs ``Predict("question -> answer")``
(cache off, metric ``exact_match:answer``): warm-up jobs at 100 ms (4 x 10,000 examples by default,
each measured and reported, because a fresh broker's JVM compiles for a while and its CPU per example
keeps falling over the first tens of thousands of examples), then three timed jobs at 100 ms (the
median is the headline; all three are reported) and one at 1 s LM latency. Wall time is the client's
``evaluate`` call: submit, wait, read every per-example result.

CPU ms per example of each stage come from psutil ``cpu_times`` deltas over that call; the client is
this process minus the sampler thread, which reads RSS every 0.5 s and each predictor's
``dspex_tasks_in_flight`` from its /metrics every 2 s (a scrape costs a predictor ~3.4 ms of CPU,
counted in the predictors).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import evaluate_vs_dspy
import httpx
import psutil
from _pipeline_stack import BenchStack, CpuWindow, Sampler, progress
from common import SimProcess, machine_summary, markdown_table, process_cpu_s, start_sim

from dspex.configuration import context
from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.modules import Predict
from dspex.testing import arithmetic_dataset

METRIC = "exact_match:answer"
DATASET_SEED = 7
WARMUP_SEED = 8
JOB_TIMEOUT_S = 300.0
MB = 1024 * 1024
STAGES = ["predictors", "scorer", "aggregator", "broker", "simulated LM", "client"]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mode", choices=["tuned", "defaults"], default="tuned",
        help="tuned: warm-up + timed jobs with tuned flags; defaults: default vs tuned flags, fresh stacks",
    )  # fmt: skip
    parser.add_argument("--defaults-fast-examples", type=int, default=6000, help="defaults mode, 100 ms")
    parser.add_argument("--defaults-slow-examples", type=int, default=10000, help="defaults mode, 1 s")
    parser.add_argument(
        "--defaults-rounds", type=int, default=1,
        help="defaults mode: jobs per configuration, in alternating order; the median is reported",
    )  # fmt: skip
    parser.add_argument("--predictors", type=int, default=2, help="predictor processes")
    parser.add_argument("--concurrency", type=int, default=1024, help="tasks in flight per predictor")
    parser.add_argument("--fast-examples", type=int, default=20000, help="examples per job at 100 ms")
    parser.add_argument("--fast-jobs", type=int, default=3, help="timed jobs at 100 ms (median: headline)")
    parser.add_argument("--slow-examples", type=int, default=10000, help="examples at 1 s latency")
    parser.add_argument(
        "--warmup-jobs", type=int, default=4, help="jobs before the timed ones (the broker's JIT warms up)"
    )
    parser.add_argument("--warmup-examples", type=int, default=10000, help="examples per warm-up job")
    parser.add_argument("--dspy-fast-examples", type=int, default=2000, help="DSPy examples at 100 ms")
    parser.add_argument("--dspy-slow-examples", type=int, default=1000, help="DSPy examples at 1 s")
    parser.add_argument("--dspy-threads", type=_ints, default=[64, 256], help="DSPy thread counts")
    parser.add_argument("--aggregator-tasks", type=int, default=100_000, help="big job at 0 latency (0: off)")
    parser.add_argument(
        "--aggregator-deadline", type=float, default=240.0, help="seconds before cancelling it"
    )
    return parser


@dataclass
class PipelineRun:
    """One timed job through the pipeline."""

    label: str
    latency_s: float
    examples: int
    wall_s: float
    score: float
    errors: int
    cpu_s: dict[str, float]
    machine_cpu_s: float
    max_rss: dict[str, int]
    max_in_flight: list[int]

    @property
    def rate(self) -> float:
        return self.examples / self.wall_s


@dataclass
class AggregatorRun:
    """The big status-only job: how far it got and the aggregator's RSS."""

    tasks: int
    done: int
    state: str
    wall_s: float
    rss_before: int
    rss_max: int


# --------------------------------------------------------------------------- the simulated LM


def _set_latency(sim: SimProcess, latency: float) -> None:
    response = httpx.post(f"{sim.admin_url}/config", json={"latency": latency}, timeout=10)
    response.raise_for_status()
    progress(f"simulated LM latency now {latency:g} s")


# --------------------------------------------------------------------------- DSPy side


def _dspy_runs(args: argparse.Namespace, sim: SimProcess) -> list[dict[str, Any]]:
    """DSPy's Evaluate per thread count, each in a fresh child process, at 100 ms and at 1 s."""
    runs: list[dict[str, Any]] = []
    for latency, examples in ((0.1, args.dspy_fast_examples), (1.0, args.dspy_slow_examples)):
        _set_latency(sim, latency)
        child_args = argparse.Namespace(examples=examples)
        for width in args.dspy_threads:
            measured = evaluate_vs_dspy._run_config("dspy", width, child_args, sim)
            runs.append({**measured, "latency": latency, "examples": examples})
    return runs


def _best_dspy(runs: list[dict[str, Any]], latency: float) -> dict[str, Any]:
    return max((r for r in runs if r["latency"] == latency), key=lambda r: r["examples"] / r["wall_s"])


# --------------------------------------------------------------------------- dspex side


def _lm(sim: SimProcess) -> LM:
    return LM("openai/simulated", api_base=sim.base_url, cache=False)


def _evaluate(bench: BenchStack, sim: SimProcess, examples: int, seed: int) -> EvaluationResult:
    devset = arithmetic_dataset(examples, seed=seed)
    with context(lm=_lm(sim)):
        result = bench.bench_client.evaluate(
            Predict("question -> answer"), devset, METRIC, display_progress=False, timeout=JOB_TIMEOUT_S
        )
    return cast(EvaluationResult, result)  # wait=True: the result, not the job id


def _timed_job(
    bench: BenchStack, sim: SimProcess, label: str, latency: float, examples: int, seed: int
) -> PipelineRun:
    """One job with CPU, RSS and in-flight measured over the client's evaluate call."""
    groups = {
        "predictors": bench.pids("predict"),
        "scorer": bench.pids("score"),
        "aggregator": bench.pids("aggregate"),
        "broker": [bench.broker_pid],
        "simulated LM": [sim.process.pid],
    }
    watched = {w.name: w.pid for w in bench.stack.workers} | {"broker": bench.broker_pid}
    sampler = Sampler(watched, bench.metrics_urls())
    window = CpuWindow(groups, process_cpu_s)
    progress(f"{label}: {examples:,} examples at {latency:g} s latency")
    sampler.start()
    window.begin()
    started = time.perf_counter()
    result = _evaluate(bench, sim, examples, seed)
    wall_s = time.perf_counter() - started
    spent = window.end()
    sampler.stop()
    spent["client"] -= sampler.thread_cpu_s
    progress(
        f"{label}: {examples / wall_s:,.0f} examples/s, score {result.score:.1f}, errors {result.errors}"
    )
    return PipelineRun(
        label, latency, examples, wall_s, result.score, result.errors, spent, window.machine_s,
        sampler.max_rss, list(sampler.max_in_flight.values()),
    )  # fmt: skip


def _tuned_flags(args: argparse.Namespace) -> list[str]:
    return ["--concurrency", str(args.concurrency), "--lm-initial-limit", str(args.concurrency)]


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def _pipeline_runs(
    args: argparse.Namespace, sim: SimProcess, bench: BenchStack
) -> tuple[list[PipelineRun], list[PipelineRun], dict[str, int]]:
    """The warm-up jobs, the timed jobs, and every process's RSS once the workers are ready."""
    predictor_args = [*_tuned_flags(args), "--allow-api-base", sim.base_url]
    _set_latency(sim, 0.1)
    bench.start(args.predictors, predictor_args)
    bench.wait_ready()
    baseline = {w.name: _rss(w.pid) for w in bench.stack.workers} | {"broker": _rss(bench.broker_pid)}
    warmup = [
        _timed_job(bench, sim, f"warm-up {n}", 0.1, args.warmup_examples, WARMUP_SEED + n)
        for n in range(1, args.warmup_jobs + 1)
    ]
    runs = [
        _timed_job(bench, sim, f"100 ms #{n}", 0.1, args.fast_examples, DATASET_SEED + n)
        for n in range(1, args.fast_jobs + 1)
    ]
    _set_latency(sim, 1.0)
    runs.append(_timed_job(bench, sim, "1 s", 1.0, args.slow_examples, DATASET_SEED))
    return warmup, runs, baseline


def _aggregator_job(args: argparse.Namespace, sim: SimProcess, bench: BenchStack) -> AggregatorRun | None:
    """A big job at 0 latency, followed by status only (no results read): the aggregator's RSS for it.

    Cancelled at ``--aggregator-deadline``; then the report says how many tasks it had counted.
    """
    if not args.aggregator_tasks:
        return None
    _set_latency(sim, 0.0)
    aggregator = bench.pids("aggregate")[0]
    before = _rss(aggregator)
    sampler = Sampler({"aggregate": aggregator}, [])
    progress(f"aggregator state: {args.aggregator_tasks:,} tasks at 0 s latency, status only")
    sampler.start()
    started = time.perf_counter()
    with context(lm=_lm(sim)):
        job_id = bench.bench_client.evaluate(
            Predict("question -> answer"), arithmetic_dataset(args.aggregator_tasks, seed=WARMUP_SEED + 1),
            METRIC, wait=False, display_progress=False,
        )  # fmt: skip
    status = _follow(bench, str(job_id), started + args.aggregator_deadline)
    wall_s = time.perf_counter() - started
    sampler.stop()
    done = 0 if status is None else status.done
    state = "none seen" if status is None else status.state
    progress(f"aggregator job: {done:,} of {args.aggregator_tasks:,} tasks counted, state {state}")
    return AggregatorRun(
        args.aggregator_tasks, done, str(state), wall_s, before, sampler.max_rss["aggregate"]
    )


def _follow(bench: BenchStack, job_id: str, deadline: float) -> Any:
    """The job's status once it finished, or its last status at ``deadline`` (then it is cancelled)."""
    status = None
    while time.perf_counter() < deadline:
        status = bench.bench_client.status(job_id)
        if status is not None and status.finished:
            return status
        time.sleep(2.0)  # the aggregator publishes status every second; no finer event to wait on
    bench.bench_client.cancel(job_id, "benchmark deadline")
    return status


# --------------------------------------------------------------------------- report


@dataclass
class Measured:
    """Everything one run of the benchmark measured."""

    warmup: list[PipelineRun]
    runs: list[PipelineRun]  # the timed 100 ms jobs, then the 1 s job
    dspy: list[dict[str, Any]]
    baseline: dict[str, int]  # RSS once the workers were ready
    big: AggregatorRun | None

    @property
    def fast(self) -> list[PipelineRun]:
        return [run for run in self.runs if run.latency_s == 0.1]

    @property
    def slow(self) -> PipelineRun:
        return next(run for run in self.runs if run.latency_s == 1.0)

    @property
    def median_fast(self) -> PipelineRun:
        """The timed 100 ms job with the median rate (the headline)."""
        return sorted(self.fast, key=lambda run: run.rate)[(len(self.fast) - 1) // 2]

    def dspy_best_rate(self, latency: float) -> float:
        best = _best_dspy(self.dspy, latency)
        return float(best["examples"] / best["wall_s"])


def _throughput_table(args: argparse.Namespace, measured: Measured) -> str:
    processes = f"{args.predictors} predictors + scorer + aggregator + broker + sim + client"
    rows: list[list[Any]] = []
    for run in measured.runs:
        ratio = f"{run.rate / measured.dspy_best_rate(run.latency_s):.2f}x"
        in_flight = (
            f"{args.predictors} x {args.concurrency} (max seen {'+'.join(map(str, run.max_in_flight))})"
        )
        rows.append([
            f"dspex pipeline, {run.label}", f"{run.latency_s * 1000:.0f} ms", run.examples, processes,
            in_flight, run.wall_s, run.rate, f"{run.score:.1f}", run.errors, ratio,
        ])  # fmt: skip
    for r in measured.dspy:
        ratio = (r["examples"] / r["wall_s"]) / measured.dspy_best_rate(r["latency"])
        rows.append([
            "DSPy Evaluate", f"{r['latency'] * 1000:.0f} ms", r["examples"], "1 + sim",
            f"{r['width']} threads", r["wall_s"], r["examples"] / r["wall_s"], f"{r['score']:.1f}", "-",
            f"{ratio:.2f}x",
        ])  # fmt: skip
    headers = ["engine", "LM latency", "examples", "processes", "in flight", "wall s", "examples/s",
               "score", "errors", "vs DSPy best"]  # fmt: skip
    return markdown_table(headers, rows)


def _warmup_table(warmup: list[PipelineRun]) -> str:
    headers = ["job (100 ms)", "examples", "examples/s", "broker CPU ms/example", "total CPU ms/example"]
    rows = [
        [run.label, run.examples, run.rate, 1000 * run.cpu_s["broker"] / run.examples,
         1000 * sum(run.cpu_s.values()) / run.examples]
        for run in warmup
    ]  # fmt: skip
    return markdown_table(headers, rows)


def _cpu_table(runs: list[PipelineRun]) -> str:
    headers = ["stage", *(f"CPU ms/example, {r.label}" for r in runs)]
    rows = [[stage, *(1000 * r.cpu_s[stage] / r.examples for r in runs)] for stage in STAGES]
    rows.append(["total", *(1000 * sum(r.cpu_s.values()) / r.examples for r in runs)])
    rows.append(
        ["(whole machine, other work on it included)", *(1000 * r.machine_cpu_s / r.examples for r in runs)]
    )
    rows.append(["(CPU ms available per example: 2 cores x wall / examples)",
                 *(2000 * r.wall_s / r.examples for r in runs)])  # fmt: skip
    return markdown_table(headers, rows)


def _memory_table(runs: list[PipelineRun], baseline: dict[str, int]) -> str:
    names = sorted(baseline)
    headers = ["process", "RSS MB after ready", *(f"max RSS MB during {r.label}" for r in runs)]
    rows = [[name, baseline[name] / MB, *(r.max_rss.get(name, 0) / MB for r in runs)] for name in names]
    return markdown_table(headers, rows)


def _report(args: argparse.Namespace, measured: Measured, load_before: str) -> str:
    parts = [
        f"Whole pipeline through Kafka vs DSPy 3.4.1 `Evaluate`, `Predict('question -> answer')`, "
        f"simulated LM, cache off, metric `{METRIC}`; everything on this machine ({machine_summary()} "
        f"at the end; {load_before} before the run; the machine is shared with other work).\n",
        _throughput_table(args, measured),
        "\nWarm-up jobs on the same stack before the timed ones (a fresh broker's JVM compiles while "
        "it runs):\n",
        _warmup_table(measured.warmup),
        "\nCPU milliseconds per example by stage (psutil cpu_times deltas over the client's evaluate "
        "call; predictors summed):\n",
        _cpu_table(measured.runs),
        "\nMemory (RSS sampled every 0.5 s):\n",
        _memory_table(measured.runs, measured.baseline),
        "\n" + _notes(args, measured),
    ]
    return "\n".join(parts)


def _aggregator_note(measured: Measured) -> str:
    runs, big = measured.runs, measured.big
    agg = max(r.max_rss.get("aggregate-1", 0) for r in runs) / MB
    ready, largest = measured.baseline["aggregate-1"] / MB, max(r.examples for r in runs)
    text = (
        f"- Aggregator RSS (whole process, faust included, not only its tables): {ready:.0f} MB after "
        f"ready, max {agg:.0f} MB during the jobs above (up to {largest:,} tasks)."
    )
    if big is None:
        return text + " The 100,000-task job was not run (`--aggregator-tasks 100000` adds it)."
    return text + (
        f" A {big.tasks:,}-task job at 0 s latency (status followed, results not read): {big.done:,} tasks "
        f"counted in {big.wall_s:.0f} s, state {big.state}; aggregator RSS {big.rss_before / MB:.0f} MB "
        f"before it, max {big.rss_max / MB:.0f} MB during it "
        f"(growth {(big.rss_max - big.rss_before) / MB:.0f} MB; "
        "target for the state of a 100,000-task job < 50 MB)."
    )


def _notes(args: argparse.Namespace, measured: Measured) -> str:
    fast, slow = measured.median_fast, measured.slow
    predictors = [n for n in slow.max_rss if n.startswith("predict")]
    worst = max(slow.max_rss[n] for n in predictors) / MB
    rates = ", ".join(f"{run.rate:,.0f}" for run in measured.fast)
    lines = [
        f"- Targets (issue 4): 1,500 examples/s at 100 ms -> measured {fast.rate:,.0f}, the median of "
        f"{len(measured.fast)} jobs of {fast.examples:,} ({rates}); "
        f"{fast.rate / measured.dspy_best_rate(0.1):.2f}x DSPy's best, target 4.5x. "
        f"800 examples/s at 1 s over 10,000 examples -> measured {slow.rate:,.0f} over {slow.examples:,}.",
        f"- Predictor RSS with up to {max(slow.max_in_flight, default=0):,} tasks in flight (1 s run): "
        f"max {worst:.0f} MB (target < 300 MB).",
        _aggregator_note(measured),
        "- Predictors run with `--lm-initial-limit` equal to `--concurrency` (tuned flags); "
        "`--mode defaults` measures what the default flags give instead.",
        "- Wall time includes submitting every task and reading every per-example result back.",
        f"- Command: `{' '.join(['.venv/bin/python', 'bench/pipeline_throughput.py', *sys.argv[1:]])}` "
        f"(predictors {args.predictors}, concurrency {args.concurrency}).",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- defaults mode

MODES = ("defaults", "tuned")


def _fresh_stack_job(
    args: argparse.Namespace, sim: SimProcess, work_dir: Path, mode: str, latency: float, examples: int
) -> PipelineRun:
    """One job on a stack of its own (fresh broker, fresh workers), predictors on ``mode``'s flags."""
    flags = [] if mode == "defaults" else _tuned_flags(args)
    bench = BenchStack(work_dir / f"{mode}-{latency * 1000:.0f}ms")
    try:
        _set_latency(sim, latency)
        bench.start(args.predictors, [*flags, "--allow-api-base", sim.base_url])
        bench.wait_ready()
        # the machine is shared: the 1-minute load average as each job starts goes into its label
        label = f"{mode}, {latency * 1000:.0f} ms (load {os.getloadavg()[0]:.1f})"
        return _timed_job(bench, sim, label, latency, examples, DATASET_SEED)
    finally:
        bench.close()


def _defaults_runs(
    args: argparse.Namespace, sim: SimProcess, work_dir: Path
) -> dict[tuple[str, float], PipelineRun]:
    """Default vs tuned flags at each latency, ``--defaults-rounds`` jobs each: the median job (by
    rate) per configuration. The two modes alternate, and each round reverses the order of the one
    before (defaults, tuned, tuned, defaults, ...), so that load drift and going first hit both."""
    rounds: dict[tuple[str, float], list[PipelineRun]] = {}
    for latency, examples in ((0.1, args.defaults_fast_examples), (1.0, args.defaults_slow_examples)):
        for index in range(max(1, args.defaults_rounds)):
            for mode in MODES if index % 2 == 0 else MODES[::-1]:
                run = _fresh_stack_job(args, sim, work_dir, mode, latency, examples)
                rounds.setdefault((mode, latency), []).append(run)
    _DEFAULTS_ROUNDS.clear()
    _DEFAULTS_ROUNDS.update(rounds)
    return {key: _median_run(runs) for key, runs in rounds.items()}


# every job of the last _defaults_runs, for the report's per-round rates
_DEFAULTS_ROUNDS: dict[tuple[str, float], list[PipelineRun]] = {}


def _median_run(runs: list[PipelineRun]) -> PipelineRun:
    """The job with the median rate (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda run: run.rate)
    return ordered[(len(ordered) - 1) // 2]


def _defaults_report(
    args: argparse.Namespace, runs: dict[tuple[str, float], PipelineRun], dspy: list[dict[str, Any]],
    load_before: str,
) -> str:  # fmt: skip
    tuned_flags = " ".join(_tuned_flags(args))
    rows: list[list[Any]] = []
    for run in runs.values():
        latency = run.latency_s
        predictors = [n for n in run.max_rss if n.startswith("predict")]
        rows.append([
            f"dspex pipeline, {run.label}", f"{latency * 1000:.0f} ms", run.examples, run.wall_s, run.rate,
            f"{run.score:.1f}", run.errors, f"{run.rate / runs['tuned', latency].rate:.0%}",
            f"{run.rate / _dspy_best(dspy, latency):.2f}x", "+".join(map(str, run.max_in_flight)) or "-",
            max(run.max_rss[n] for n in predictors) / MB if predictors else 0.0,
            1000 * run.machine_cpu_s / run.examples,
        ])  # fmt: skip
    for r in dspy:
        rate = r["examples"] / r["wall_s"]
        rows.append([
            f"DSPy Evaluate, {r['width']} threads", f"{r['latency'] * 1000:.0f} ms", r["examples"],
            r["wall_s"], rate, f"{r['score']:.1f}", "-", "-", f"{rate / _dspy_best(dspy, r['latency']):.2f}x",
            "-", "-", "-",
        ])  # fmt: skip
    headers = ["engine, predictor flags", "LM latency", "examples", "wall s", "examples/s", "score",
               "errors", "vs tuned", "vs DSPy best", "max in flight seen", "predictor max RSS MB",
               "machine CPU ms/example"]  # fmt: skip
    intro = (
        f"Default vs tuned worker flags ({args.predictors} predictors + scorer + aggregator, each job "
        "on a fresh broker with fresh workers), DSPy 3.4.1 `Evaluate` side by side; simulated LM, cache "
        f"off, metric `{METRIC}`; {load_before} before the run, {machine_summary()} at the end (the "
        "machine is shared with other work).\n"
    )
    stages = (
        "CPU milliseconds per example by stage (psutil cpu_times deltas over the client's evaluate call; "
        "predictors summed; each job's broker is a fresh JVM):\n"
    )
    return "\n".join([
        intro, markdown_table(headers, rows), "", stages, _cpu_table(list(runs.values())), "",
        _defaults_notes(args, runs, dspy, tuned_flags),
    ])  # fmt: skip


def _dspy_best(dspy: list[dict[str, Any]], latency: float) -> float:
    best = _best_dspy(dspy, latency)
    return float(best["examples"] / best["wall_s"])


def _defaults_notes(
    args: argparse.Namespace, runs: dict[tuple[str, float], PipelineRun], dspy: list[dict[str, Any]],
    tuned_flags: str,
) -> str:  # fmt: skip
    share = {lat: runs["defaults", lat].rate / runs["tuned", lat].rate for lat in (0.1, 1.0)}
    fast = runs["defaults", 0.1].rate / _dspy_best(dspy, 0.1)
    lines = [
        f"- Targets (issue 18): defaults >= 90% of tuned at both latencies -> {share[0.1]:.0%} at 100 ms, "
        f"{share[1.0]:.0%} at 1 s; defaults >= 4.5x DSPy's best at 100 ms -> {fast:.2f}x.",
        f"- defaults: predictors started with no flag but `--allow-api-base`; tuned: `{tuned_flags}`.",
        f"- Errors: {sum(run.errors for run in runs.values())} over every dspex job.",
        *_rounds_lines(),
        f"- Command: `{' '.join(['.venv/bin/python', 'bench/pipeline_throughput.py', *sys.argv[1:]])}`.",
    ]
    return "\n".join(lines)


def _rounds_lines() -> list[str]:
    """With several rounds: each configuration's rates in the order run (the table shows the median)."""
    if all(len(runs) < 2 for runs in _DEFAULTS_ROUNDS.values()):
        return []
    lines = ["- Rounds (examples/s in the order run; the tables give each configuration's median job):"]
    for (mode, latency), runs in _DEFAULTS_ROUNDS.items():
        rates = " / ".join(f"{run.rate:,.0f}" for run in runs)
        lines.append(f"  - {mode}, {latency * 1000:.0f} ms: {rates}")
    return lines


def _defaults_main(args: argparse.Namespace, work_dir: Path, load_before: str) -> None:
    with start_sim(latency=0.1) as sim:
        progress(f"simulated LM at {sim.base_url} (pid {sim.process.pid}); work dir {work_dir}")
        dspy = _dspy_runs(args, sim)
        runs = _defaults_runs(args, sim, work_dir)
    print(_defaults_report(args, runs, dspy, load_before))


# --------------------------------------------------------------------------- main


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that the finally blocks stop every process we started


def main() -> int:
    args = _parser().parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    load_before = "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    work_dir = Path(tempfile.mkdtemp(prefix="dspex-bench-pipeline-"))
    ok = False
    try:
        if args.mode == "defaults":
            _defaults_main(args, work_dir, load_before)
            ok = True
            return 0
        with start_sim(latency=0.1) as sim:
            progress(f"simulated LM at {sim.base_url} (pid {sim.process.pid}); work dir {work_dir}")
            dspy = _dspy_runs(args, sim)
            bench = BenchStack(work_dir)
            try:
                warmup, runs, baseline = _pipeline_runs(args, sim, bench)
                big = _aggregator_job(args, sim, bench)
            finally:
                bench.close()
        print(_report(args, Measured(warmup, runs, dspy, baseline, big), load_before))
        ok = True
    finally:
        if ok:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            progress(f"failed; worker logs and broker data kept in {work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
