"""ReActV2's tool phase: dspex (a turn's calls at once) against DSPy 3.4.1's ReActV2 (one after another).

Reproduce (about 1.5 minutes on a 2-core machine, most of it DSPy's 600 ms turns):

    .venv/bin/python bench/tools_parallel.py
    .venv/bin/python bench/tools_parallel.py --turns 200 --tool-ms 200 --tool-kind async

An agent ``ReActV2("question -> answer", tools=[weather, news, stocks])`` whose every turn calls the
three tools (each sleeps ``--tool-ms``, 200 ms by default: a remote API), ``--turns-per-example``
such turns per example, then ``submit``; examples run one after another until ``--turns`` turns are
measured (after one warm-up example). Measured per turn: the tool phase alone, from the moment the
LM's calls are parsed to the moment all their results are in (DSPy's ``_execute_tool_calls``, dspex's
``_run_turn``), so the LM call is excluded. Both engines are called the same way (sync
``agent(question=...)``), each in a fresh child process.

The LM is a scripted one, in process, on both sides: each library's ``DummyLM`` with the same script
(three calls per turn, then submit), through ``ChatAdapter`` with text tool calls. The simulated LM
server (``dspex.testing``) does not answer native tool calls yet, and the LM is outside the measured
phase anyway. ``--tool-kind sync`` (default) tools are plain functions (``time.sleep``: dspex runs them
in threads, DSPy inline); ``async`` tools are coroutine functions (``asyncio.sleep``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from common import machine_summary, markdown_table, run_child_json

TOOL_NAMES = ("weather", "news", "stocks")
TARGET_P50_MS = 260.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="measured turns of three tool calls")
    parser.add_argument("--turns-per-example", type=int, default=4, help="tool turns before submit")
    parser.add_argument("--tool-ms", type=float, default=200.0, help="each tool call's duration")
    parser.add_argument("--tool-kind", choices=["sync", "async"], default="sync")
    parser.add_argument("--child", choices=["dspex", "dspy"], help=argparse.SUPPRESS)
    return parser


# --------------------------------------------------------------------------- the agent's world


def _tools(kind: str, seconds: float) -> list[Callable[..., Any]]:
    """Three tools that take ``seconds`` each, sync or async."""

    def make(name: str) -> Callable[..., Any]:
        if kind == "sync":

            def call(query: str) -> str:
                time.sleep(seconds)
                return f"{name}: {query}"

        else:

            async def call(query: str) -> str:  # type: ignore[misc]
                await asyncio.sleep(seconds)
                return f"{name}: {query}"

        call.__name__ = call.__qualname__ = name
        call.__doc__ = f"Look up the {name} for a query."
        return call

    return [make(name) for name in TOOL_NAMES]


def _script(tool_calls: Any, turns: int, example: int) -> list[dict[str, Any]]:
    """The LM's answers for one example: ``turns`` turns of three calls, then submit."""
    answers = []
    for turn in range(turns):
        calls = [{"name": name, "args": {"query": f"q{example}.{turn}"}} for name in TOOL_NAMES]
        answers.append({"next_thought": "Ask all three.", "tool_calls": tool_calls.from_dict_list(calls)})
    done = [{"name": "submit", "args": {"answer": f"answer {example}"}}]
    answers.append({"next_thought": "Done.", "tool_calls": tool_calls.from_dict_list(done)})
    return answers


def _examples(args: argparse.Namespace) -> int:
    return -(-args.turns // args.turns_per_example)  # ceiling


def _summary(phases_s: list[float], wall_s: float, answered: int) -> dict[str, Any]:
    ms = sorted(1000 * s for s in phases_s)
    return {
        "turns": len(ms),
        "p50_ms": statistics.median(ms),
        "p90_ms": ms[int(0.9 * (len(ms) - 1))],
        "mean_ms": statistics.fmean(ms),
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "wall_s": wall_s,
        "answered": answered,
    }


# --------------------------------------------------------------------------- children


def _child_dspex(args: argparse.Namespace) -> dict[str, Any]:
    import dspex
    from dspex.adapters import ChatAdapter
    from dspex.modules import ReActV2
    from dspex.utils import DummyLM

    phases: list[float] = []

    class TimedReActV2(ReActV2):
        async def _run_turn(self, history: Any, pending: Any, pred: Any, calls: Any) -> Any:
            start = time.perf_counter()
            final = await super()._run_turn(history, pending, pred, calls)
            if len(calls.tool_calls) == len(TOOL_NAMES):
                phases.append(time.perf_counter() - start)
            return final

    agent = TimedReActV2("question -> answer", tools=_tools(args.tool_kind, args.tool_ms / 1000))

    def run_example(example: int) -> bool:
        lm = DummyLM(_script(dspex.ToolCalls, args.turns_per_example, example))
        with dspex.context(lm=lm, adapter=ChatAdapter()):
            pred = agent(question=f"question {example}")
        return bool(pred.answer == f"answer {example}")

    return _measure(run_example, phases, args)


def _child_dspy(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    import dspy

    phases: list[float] = []

    class TimedReActV2(dspy.ReActV2):  # type: ignore[misc, name-defined]
        def _execute_tool_calls(self, tool_calls: Any) -> Any:
            start = time.perf_counter()
            result = super()._execute_tool_calls(tool_calls)
            if len(tool_calls.tool_calls) == len(TOOL_NAMES):
                phases.append(time.perf_counter() - start)
            return result

    agent = TimedReActV2("question -> answer", tools=_tools(args.tool_kind, args.tool_ms / 1000))

    def run_example(example: int) -> bool:
        lm = dspy.utils.DummyLM(_script(dspy.ToolCalls, args.turns_per_example, example))
        context = {"allow_tool_async_sync_conversion": True} if args.tool_kind == "async" else {}
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter(), **context):
            pred = agent(question=f"question {example}")
        return bool(pred.answer == f"answer {example}")

    return _measure(run_example, phases, args)


def _measure(
    run_example: Callable[[int], bool], phases: list[float], args: argparse.Namespace
) -> dict[str, Any]:
    """One warm-up example (threads, caches), then enough examples for ``--turns`` measured turns."""
    run_example(-1)
    phases.clear()
    start = time.perf_counter()
    answered = sum(run_example(example) for example in range(_examples(args)))
    return _summary(phases, time.perf_counter() - start, answered)


# --------------------------------------------------------------------------- parent


def _run(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", engine, "--turns", str(args.turns)]
    argv += ["--turns-per-example", str(args.turns_per_example), "--tool-ms", str(args.tool_ms)]
    argv += ["--tool-kind", args.tool_kind]
    measured: dict[str, Any] = run_child_json(argv, timeout_s=1800)
    print(f"  {engine}: p50 {measured['p50_ms']:.0f} ms over {measured['turns']} turns", file=sys.stderr)
    return {"engine": engine, **measured}


HEADERS = [
    "engine",
    "turns",
    "p50 ms",
    "p90 ms",
    "mean ms",
    "min ms",
    "max ms",
    "examples answered",
    "wall s",
]


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        child = _child_dspex if args.child == "dspex" else _child_dspy
        print(json.dumps(child(args)))
        return
    runs = [_run("dspex", args), _run("dspy", args)]
    examples = _examples(args)
    rows = [
        [r["engine"], r["turns"], r["p50_ms"], r["p90_ms"], r["mean_ms"], r["min_ms"], r["max_ms"],
         f"{r['answered']}/{examples}", r["wall_s"]]
        for r in runs
    ]  # fmt: skip
    print(f"ReActV2 tool phase per turn (LM call excluded): three {args.tool_kind} tools of "
          f"{args.tool_ms:.0f} ms per turn, {args.turns_per_example} turns per example then submit, "
          f"scripted LM (DummyLM) on both sides, dspex vs DSPy 3.4.1; {machine_summary()}.\n")  # fmt: skip
    print(markdown_table(HEADERS, rows))
    dspex_p50, dspy_p50 = runs[0]["p50_ms"], runs[1]["p50_ms"]
    print(f"\ndspex p50 {dspex_p50:.0f} ms vs DSPy p50 {dspy_p50:.0f} ms ({dspy_p50 / dspex_p50:.1f}x); "
          f"target p50 <= {TARGET_P50_MS:.0f} ms.")  # fmt: skip


if __name__ == "__main__":
    main()
