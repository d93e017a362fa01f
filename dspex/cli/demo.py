"""`dspex demo`: the whole pipeline on this machine, end to end, in one command.

A broker (the dev broker, started if none runs on the port), the simulated LM (a simulation, not
a model), one aggregator, one scorer and two predictor processes, the topics, and then an evaluation
of a ChainOfThought arithmetic program through Kafka with a live progress bar. It prints the score,
where each process's /metrics is, and how to add a predictor; then it stops what it started, or
with ``--keep`` leaves everything running until Ctrl-C.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dspex.cli._common import PrefixOption
from dspex.client import Client
from dspex.configuration import context
from dspex.dev.broker import DevBroker
from dspex.dev.stack import LocalStack
from dspex.errors import ConfigurationError
from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.modules import ChainOfThought
from dspex.signatures import make_signature
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry
from dspex.testing import SimulatedLMServer, arithmetic_dataset

__all__ = ["register"]

DEMO_DIR = Path("~/.cache/dspex/demo")
INSTRUCTIONS = "Answer the arithmetic question with a number."
WORKER_START_TIMEOUT_S = 60.0
console = Console(stderr=True)


def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the stack running until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option("--port", help="Port of the dev broker.")] = 9092,
    prefix: PrefixOption = "dspex.",
    examples: Annotated[int, typer.Option("--examples", min=1, help="Examples to evaluate.")] = 400,
    predictors: Annotated[int, typer.Option("--predictors", min=1, help="Predictor processes.")] = 2,
    latency: Annotated[float, typer.Option("--latency", min=0.0, help="Simulated LM latency, s.")] = 0.1,
) -> None:
    """Run the pipeline locally and evaluate a program through Kafka.

    Example: dspex demo --keep
    """
    signal.signal(signal.SIGTERM, _interrupt)  # stop what we started on SIGTERM too, not only Ctrl-C
    broker = DevBroker(port=port, notify=lambda line: console.print(f"[dim]broker:[/] {line}"))
    started_broker = broker.start()
    bootstrap = f"127.0.0.1:{port}"
    sim = SimulatedLMServer(latency=latency)
    stack = LocalStack(bootstrap=bootstrap, prefix=prefix, work_dir=DEMO_DIR.expanduser())
    try:
        sim.start()
        console.print(f"simulated LM (a simulation, not a model) at {sim.base_url}, {latency:g} s latency")
        ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), TopicRegistry(prefix))
        _start_workers(stack, sim.base_url, predictors)
        _wait_for_workers(stack, bootstrap, prefix)
        result = _evaluate(bootstrap, prefix, sim.base_url, examples)
        _report(result, bootstrap, prefix, sim.base_url)
        if keep:
            _wait_for_ctrl_c()
    finally:
        stack.stop_all()
        sim.stop()
        if started_broker:
            broker.stop()
        kept = "" if started_broker else " (the broker was running before, so it stays)"
        console.print(f"stopped what the demo started{kept}")


def _start_workers(stack: LocalStack, api_base: str, predictors: int) -> None:
    stack.start("aggregate")
    stack.start("score")
    for _ in range(predictors):
        stack.start("predict", "--allow-api-base", api_base)
    counted = f"{predictors} predictor" + ("" if predictors == 1 else "s")
    console.print(f"workers: 1 aggregator, 1 scorer, {counted} (logs in {stack.work_dir})")


def _wait_for_workers(stack: LocalStack, bootstrap: str, prefix: str) -> None:
    """Until every worker has sent a heartbeat (so the report can list each one's /metrics); a worker
    that died says why."""
    expected = {w.name for w in stack.workers}
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    with Client(bootstrap, prefix=prefix) as client:
        while time.monotonic() < deadline:
            stack.check_running()
            if expected <= {beat.worker_id for beat in client.workers()}:
                return
            time.sleep(0.5)
    raise ConfigurationError(f"workers {sorted(expected)} sent no heartbeat in {WORKER_START_TIMEOUT_S:g} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _evaluate(bootstrap: str, prefix: str, api_base: str, examples: int) -> EvaluationResult:
    lm = LM("openai/simulated", api_base=api_base, cache=False)
    program = ChainOfThought(make_signature("question -> answer", INSTRUCTIONS))
    devset = arithmetic_dataset(examples, seed=7)
    console.print(f"evaluating ChainOfThought('question -> answer') on {examples} arithmetic questions")
    with Client(bootstrap, prefix=prefix) as client, context(lm=lm):
        result = client.evaluate(program, devset, "numeric_equal:answer", name="demo")
    return result


def _report(result: EvaluationResult, bootstrap: str, prefix: str, api_base: str) -> None:
    table = Table(title="demo evaluation (through Kafka)")
    for column in ("score", "examples", "errors", "tokens", "cost USD", "wall s", "examples/s"):
        table.add_column(column, justify="right")
    elapsed = max(result.elapsed_s, 1e-9)
    table.add_row(
        f"{result.score:.1f}",
        str(result.total),
        str(result.errors),
        str(result.usage.total_tokens),
        f"{result.usage.cost_usd:.4f}",
        f"{elapsed:.1f}",
        f"{result.total / elapsed:.0f}",
    )
    Console().print(table)
    with Client(bootstrap, prefix=prefix) as client:
        for beat in client.workers():
            if beat.metrics_url:
                console.print(f"  {beat.worker_id}: {beat.metrics_url}")
    console.print(
        "scale out: in another terminal run\n"
        f"  dspex worker predict --bootstrap {bootstrap} --prefix {prefix} --fast-groups"
        f" --allow-api-base {api_base}\n"
        "and it joins the predictor group; `dspex status` shows jobs, workers and lag."
    )


def _wait_for_ctrl_c() -> None:
    console.print("the stack keeps running; Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    """Add `dspex demo` to the root command."""
    app.command("demo")(demo)
