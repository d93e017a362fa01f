"""What tracing costs a local Evaluate: throughput with tracing off, at the default sampling, and
with the exporter pointed at a black hole.

Reproduce (about 2 minutes on a 2-core machine):

    .venv/bin/python bench/tracing_overhead.py
    .venv/bin/python bench/tracing_overhead.py --examples 2000 --latency 0.05 --width 256 --rounds 3

One simulated LM subprocess (a simulation, not a model) serves every configuration. Each
configuration runs in a fresh child process: ``ChainOfThought("question -> answer")`` evaluated over
the same arithmetic devset (LM cache off), after a warm-up at the same width and a flush of its spans;
the timed run starts ``SETTLE_S`` after the warm-up in every configuration (the black hole's flush
waits its whole timeout, and a pause alone changes the figure); the child times the evaluation call
alone. Configurations:

- ``off``: tracing off (the default);
- ``default``: ``dspex.configure(tracing=...)`` at the default sampling (1% of examples, plus failed
  ones), exporting over OTLP/HTTP to a receiver in the parent process that accepts every batch;
- ``black hole``: the same sampling, exporting to a port that accepts connections and never answers;
- ``all``: every example sampled (ratio 1.0), to the accepting receiver: the cost of full traces.

``--cpu`` measures instead the CPU per example of in-process runs (simulated LM in its own process at
0 latency, width 32): tracing off, a callback that overrides the module and LM hooks and does nothing
(the cost of the callback seam alone), tracing at the default sampling, and at the default sampling
to the black hole. All of them run in one child process, interleaved round by round (each round a
fresh program and LM with no history left in the process, after a 100-example warm-up and a
flush of the exporter), and each configuration's cost is given as the median
of its per-round ratios to "off": on a shared machine only ratios taken under the same load mean
anything.

Rounds run the configurations in turn, each round starting one configuration later than the one
before (off, default, black hole, all; then default, black hole, all, off; ...), so that load from
other work on the machine, and going first or after the heaviest, fall on all of them alike; the
table gives each configuration's median rate, and its median over rounds of the ratio to the same
round's "off" (throughput and CPU) with the spread of those ratios (middle half, and all rounds);
two lines compare the black hole with the default in the same round. On a shared machine one
round's figure moves by +-15%: read the spread before a median, and prefer ``--cpu`` with many short
rounds (``--cpu --rounds 15 --examples 500``) to a few long ones.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from common import CpuClock, machine_summary, markdown_table, run_child_json, start_sim

from dspex.testing.listener import LoopbackListener

DATASET_SEED = 7
WARMUP_SEED = 8
WARMUP_EXAMPLES = 256
MODES = ("off", "default", "black hole", "all")
# Every configuration starts its timed run this long after its warm-up ended: the black hole's flush
# waits its whole second while the others return at once, and a pause alone before the run (a
# "default" child sleeping 3.5 s) measured 122% of the default's CPU, median of 6 rounds.
SETTLE_S = 1.5
CPU_MODES = ("cpu off", "cpu no-op callback", "cpu default", "cpu black hole")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="devset size per configuration")
    parser.add_argument("--latency", type=float, default=0.05, help="simulated LM latency, seconds")
    parser.add_argument("--width", type=int, default=256, help="Evaluate concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--cpu", action="store_true", help="CPU per example, in-process (see above)")
    parser.add_argument("--child", choices=[*MODES, "cpu"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--hole", help=argparse.SUPPRESS)
    return parser


def _cpu_child(args: argparse.Namespace) -> dict[str, Any]:
    """Every CPU configuration in turn, ``rounds`` times, in this one process: each round's
    configurations run under the same load, so their ratios mean something on a shared machine."""
    import dspex
    from dspex.lm.base import GLOBAL_HISTORY
    from dspex.observability.tracing import TracingSettings
    from dspex.testing.task import arithmetic_dataset

    class Silent(dspex.BaseCallback):
        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...
        def on_module_end(
            self, call_id: str, outputs: Any, exception: BaseException | None = None
        ) -> None: ...
        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...
        def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None: ...
        def on_lm_request(self, call_id: str | None, instance: Any, request: Any) -> None: ...
        def on_lm_attempt(self, call_id: str | None, instance: Any, attempt: Any) -> None: ...

    settings: dict[str, dict[str, Any]] = {
        "cpu off": {"tracing": None, "callbacks": []},
        "cpu no-op callback": {"tracing": None, "callbacks": [Silent()]},
        "cpu default": {"tracing": TracingSettings(endpoint=args.endpoint), "callbacks": []},
        "cpu black hole": {"tracing": TracingSettings(endpoint=args.hole), "callbacks": []},
    }
    metric = dspex.metrics.exact_match("answer")
    devset, warmup = arithmetic_dataset(args.examples, DATASET_SEED), arithmetic_dataset(100, WARMUP_SEED)
    measured: dict[str, list[float]] = {mode: [] for mode in CPU_MODES}
    for round_index in range(args.rounds):
        for mode in _rotated(CPU_MODES, round_index):
            dspex.configure(**settings[mode])
            # each run starts alike: a fresh program and LM, no LM history left from earlier runs (a
            # growing heap makes every later run's garbage collections dearer)
            GLOBAL_HISTORY.clear()
            program = dspex.ChainOfThought("question -> answer")
            program.set_lm(dspex.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False))
            gc.collect()
            dspex.Evaluate(devset=warmup, metric=metric, concurrency=32)(program)
            _settle()
            evaluate = dspex.Evaluate(devset=devset, metric=metric, concurrency=32)
            with CpuClock() as clock:
                evaluate(program)
            measured[mode].append(1000 * clock.cpu_s / args.examples)
    dspex.configure(tracing=None, callbacks=[])
    return measured


def _cpu_main(args: argparse.Namespace, endpoint: str, hole: str) -> None:
    with start_sim(latency=0.0) as sim:
        argv = [sys.executable, __file__, "--child", "cpu", "--base-url", sim.base_url]
        argv += ["--examples", str(args.examples), "--rounds", str(args.rounds)]
        argv += ["--endpoint", endpoint, "--hole", hole]
        measured: dict[str, list[float]] = run_child_json(argv, timeout_s=1800)
    print(
        f"{args.examples} examples in-process, LM latency 0, width 32, {args.rounds} interleaved rounds "
        f"in one process; {machine_summary()}"
    )
    off = measured["cpu off"]
    rows = []
    for mode, values in measured.items():
        ratios = [value / base for value, base in zip(values, off, strict=True)]
        rows.append(
            [
                mode,
                statistics.median(values),
                f"{statistics.median(ratios):.1%}",
                _spread(ratios),
                " / ".join(f"{x:.3f}" for x in values),
            ]
        )
    headers = ["configuration", "CPU ms/example (median)", "of off (median of rounds)", "of off (spread)"]
    print(markdown_table([*headers, "per round"], rows))
    print(_same_round("CPU per example", measured["cpu black hole"], measured["cpu default"]))


def _settle() -> None:
    """Flush the warm-up's spans (the exporter's first export, its one-time set-up, is not timed),
    then wait until ``SETTLE_S`` after the call, whatever the flush took."""
    from dspex.observability import tracing

    started = time.perf_counter()
    tracing.flush(1.0)
    time.sleep(max(0.0, started + SETTLE_S - time.perf_counter()))


def _child(args: argparse.Namespace) -> dict[str, Any]:
    import dspex
    from dspex.observability import tracing
    from dspex.observability.tracing import TracingSettings
    from dspex.observability.tracing.provider import EXPORT_ERRORS
    from dspex.testing.task import arithmetic_dataset

    if args.child != "off":
        ratio = 1.0 if args.child == "all" else None  # None: the default (OTEL_* unset here)
        dspex.configure(tracing=TracingSettings(endpoint=args.endpoint, sample_ratio=ratio))
    lm = dspex.LM("openai/sim", api_base=args.base_url, api_key="sim", cache=False)
    program = dspex.ChainOfThought("question -> answer")
    program.set_lm(lm)
    metric = dspex.metrics.exact_match("answer")
    dspex.Evaluate(
        devset=arithmetic_dataset(WARMUP_EXAMPLES, WARMUP_SEED), metric=metric, concurrency=args.width
    )(program)
    _settle()
    evaluate = dspex.Evaluate(
        devset=arithmetic_dataset(args.examples, DATASET_SEED), metric=metric, concurrency=args.width
    )
    with CpuClock() as clock:
        result = evaluate(program)
    tracing.flush(1.0)
    return {
        "wall_s": clock.wall_s,
        "cpu_s": clock.cpu_s,
        "score": result.score,
        "export_errors": EXPORT_ERRORS._value.get(),
    }


class _Accepting(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def _spread(ratios: list[float]) -> str:
    """The middle half and the whole range of per-round ratios: how far one round's figure can be
    trusted."""
    if len(ratios) < 2:
        return "-"
    low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return f"{low:.0%}..{high:.0%} (all {min(ratios):.0%}..{max(ratios):.0%})"


def _same_round(what: str, hole: list[float], default: list[float]) -> str:
    """The black hole against the default in the same round (both costs: larger is worse)."""
    ratios = [h / d for h, d in zip(hole, default, strict=True)]
    worse = sum(ratio > 1 for ratio in ratios)
    return (
        f"black hole / default, {what}, same round: median {statistics.median(ratios):.1%}, "
        f"spread {_spread(ratios)}; black hole costlier in {worse} of {len(ratios)} rounds"
    )


def _rotated(modes: tuple[str, ...], round_index: int) -> tuple[str, ...]:
    """The configurations in the order round ``round_index`` runs them."""
    start = round_index % len(modes)
    return modes[start:] + modes[:start]


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        child = _cpu_child if args.child == "cpu" else _child
        print(__import__("json").dumps(child(args)))
        return
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Accepting)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hole = LoopbackListener(hold=True)  # accepts, never answers
    endpoints = {
        "off": "",
        "default": f"http://127.0.0.1:{receiver.server_address[1]}",
        "black hole": hole.url,
        "all": f"http://127.0.0.1:{receiver.server_address[1]}",
    }
    if args.cpu:
        _cpu_main(args, endpoints["default"], endpoints["black hole"])
        receiver.shutdown()
        return
    print(machine_summary(), file=sys.stderr)
    measured: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with start_sim(latency=args.latency) as sim:
        for round_index in range(args.rounds):
            for mode in _rotated(MODES, round_index):
                argv = [sys.executable, __file__, "--child", mode, "--base-url", sim.base_url]
                argv += ["--examples", str(args.examples), "--width", str(args.width)]
                argv += ["--endpoint", endpoints[mode]]
                started = time.perf_counter()
                result = run_child_json(argv, timeout_s=900)
                measured[mode].append(result)
                print(
                    f"  round {round_index + 1} {mode}: {args.examples / result['wall_s']:,.0f} examples/s "
                    f"({time.perf_counter() - started:.0f} s with start-up)",
                    file=sys.stderr,
                )
    receiver.shutdown()
    hole.close()
    off = [r["wall_s"] for r in measured["off"]]
    rows = []
    for mode in MODES:
        rate = statistics.median(args.examples / r["wall_s"] for r in measured[mode])
        # each round's rate against the same round's "off": load that changes between rounds
        # falls on both sides of each ratio
        ratios = [base / r["wall_s"] for r, base in zip(measured[mode], off, strict=True)]
        cpu = statistics.median(1000 * r["cpu_s"] / args.examples for r in measured[mode])
        cpu_ratios = [r["cpu_s"] / b["cpu_s"] for r, b in zip(measured[mode], measured["off"], strict=True)]
        rows.append(
            [
                mode,
                rate,
                f"{statistics.median(ratios):.1%}",
                _spread(ratios),
                cpu,
                f"{statistics.median(cpu_ratios):.1%}",
                measured[mode][-1]["export_errors"],
            ]
        )
    print(f"{args.examples} examples, width {args.width}, LM latency {args.latency} s, "
          f"{args.rounds} rounds; {machine_summary()}")  # fmt: skip
    headers = ["tracing", "examples/s (median)", "of off (median of rounds)", "of off (spread)"]
    headers += ["CPU ms/example", "CPU of off (median of rounds)", "export errors"]
    print(markdown_table(headers, rows))
    walls = {mode: [r["wall_s"] for r in measured[mode]] for mode in ("black hole", "default")}
    cpus = {mode: [r["cpu_s"] for r in measured[mode]] for mode in ("black hole", "default")}
    print(_same_round("wall time", walls["black hole"], walls["default"]))
    print(_same_round("CPU", cpus["black hole"], cpus["default"]))


if __name__ == "__main__":
    main()
