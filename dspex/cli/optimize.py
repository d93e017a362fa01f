"""`dspex optimize`: an optimization on the cluster (`dspex worker optimize` runs it, checkpointing
every step), from the shell. The best program is saved where `--output` says.

Exit codes: 0 ok; 1 failed (no broker, a bad dataset line, an unknown optimizer, knob or metric, an
optimization that failed or was cancelled), with the reason on stderr; 2 bad usage (typer).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from dspex.cli._common import DEFAULT_PREFIX, BootstrapOption, PrefixOption, fail
from dspex.cli._ids import SHORT_ID
from dspex.cli._mlflow import MlflowUriOption, start_mlflow
from dspex.cli._optimize_view import OptimizeProgress, planned_candidates, summary
from dspex.cli.jobs import check_lms, client_for, load_program, read_dataset, split_inputs
from dspex.client import Client
from dspex.configuration import context
from dspex.errors import DspexError
from dspex.lm import LM
from dspex.metrics import resolve_metric
from dspex.primitives import Module
from dspex.schemas import OptimizeStatus
from dspex.serialization import candidate_id
from dspex.streams.config import DEFAULT_BOOTSTRAP
from dspex.tracking import (
    abandon_optimization,
    begin_optimization,
    log_optimization,
    log_optimization_progress,
)

__all__ = ["register"]

_EPILOG = (
    "Example: dspex optimize examples/arithmetic/program.json train.jsonl --valset val.jsonl "
    "--inputs question --optimizer bootstrap-rs --metric numeric_equal:answer "
    "--knob num_candidate_programs=8 --output best.json"
)


def parse_knobs(knobs: list[str] | None, option: str = "--knob") -> dict[str, Any]:
    """``name=value`` pairs; values are read as JSON when they parse (8, 0.5, true), else as text."""
    parsed: dict[str, Any] = {}
    for knob in knobs or []:
        name, sep, value = knob.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected NAME=VALUE, got {knob!r}", param_hint=option)
        try:
            parsed[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[name.strip()] = value
    return parsed


def optimize_command(
    program: Annotated[Path, typer.Argument(metavar="PROGRAM.json", help="The student program.")],
    trainset: Annotated[Path, typer.Argument(metavar="TRAIN.jsonl", help="One JSON object per line.")],
    inputs: Annotated[str, typer.Option("--inputs", help="Input fields, comma-separated.")],
    metric: Annotated[str, typer.Option("--metric", help="A built-in (exact_match:answer) or pkg.mod:fn.")],
    valset: Annotated[Path | None, typer.Option("--valset", help="Validation JSONL.")] = None,
    optimizer: Annotated[
        str, typer.Option("--optimizer", help="bootstrap-rs, bootstrap, ...")
    ] = "bootstrap-rs",
    knob: Annotated[list[str] | None, typer.Option("--knob", help="Optimizer knob NAME=VALUE.")] = None,
    compile_option: Annotated[
        list[str] | None, typer.Option("--compile-option", help="Option of its compile NAME=VALUE.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the search.")] = None,
    max_lm_calls: Annotated[int | None, typer.Option("--max-lm-calls", min=1, help="LM call budget.")] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", min=0, help="USD budget.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Save the best program here.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow it until it ends.")] = True,
    timeout: Annotated[float | None, typer.Option("--timeout", min=0, help="Stop waiting after S s.")] = None,
    lm: Annotated[str | None, typer.Option("--lm", metavar="PROVIDER/MODEL", help="LM of the run.")] = None,
    api_base: Annotated[str | None, typer.Option("--api-base", help="API base of --lm.")] = None,
    api_key_env: Annotated[
        str | None, typer.Option("--api-key-env", help="Variable holding its key.")
    ] = None,
    allow_module: Annotated[list[str] | None, typer.Option("--allow-module", help="Allowed code.")] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="A label for the job (default: the file's name).")
    ] = None,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch/--online",
            help="The optimizer's evaluations' LM calls through the provider's Batch API (runs for "
            "traces stay online; needs a `dspex worker provider-batch`).",
        ),
    ] = False,
    mlflow_uri: MlflowUriOption = None,
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
) -> None:
    """Optimize a saved program on the cluster; checkpointed every step, resumed after a crash."""
    fields = split_inputs(inputs)
    knobs = parse_knobs(knob)
    compile_options = parse_knobs(compile_option, "--compile-option")
    try:
        train = read_dataset(trainset, fields)
        val = None if valset is None else read_dataset(valset, fields)
        resolve_metric(metric, allow_modules=allow_module)
        run_lm = None if lm is None else LM(lm, api_base=api_base, api_key_env=api_key_env)
    except DspexError as exc:
        fail(str(exc))
    student = load_program(program, allow_module)
    check_lms(student, run_lm)
    start_mlflow(mlflow_uri)
    label = name or program.stem
    limits: dict[str, Any] = {"name": label, "seed": seed, "max_lm_calls": max_lm_calls,
                              "max_cost_usd": max_cost, "mode": "batch" if batch else None}  # fmt: skip
    limits = {key: value for key, value in limits.items() if value is not None}
    with client_for(bootstrap, prefix, allow_modules=allow_module) as client, context(lm=run_lm):
        job_id = str(
            client.optimize(
                student, train, val, metric, optimizer=optimizer, knobs=knobs,
                compile_options=compile_options, wait=False, **limits,
            )
        )  # fmt: skip
        if not wait:
            typer.echo(job_id)
            return
        typer.echo(f"job {job_id} ({label}) submitted; `dspex status {job_id[:SHORT_ID]}`", err=True)
        started = time.perf_counter()
        planned = planned_candidates(optimizer, knobs, compile_options)
        begin_optimization(optimizer)  # --mlflow-uri: its trials logged as the statuses come
        try:
            status = _follow(client, job_id, planned, timeout, label)
        except BaseException:
            abandon_optimization()  # not followed to its end (a timeout): the run says it failed
            raise
        wall_s = time.perf_counter() - started
        if status.state != "completed":
            log_optimization(status, None, knobs=knobs, seed=seed, trainset=train)
            typer.echo(summary(status, student_id=candidate_id(student), wall_s=wall_s, saved=None), err=True)
            fail(f"optimization {job_id} {status.state}: {status.reason or 'no reason given'}")
        best = client.best_program(status)
        log_optimization(status, best, knobs=knobs, seed=seed, trainset=train)
    saved = _save(best, output)
    typer.echo(summary(status, student_id=candidate_id(student), wall_s=wall_s, saved=saved), err=True)


def _follow(client: Client, job_id: str, planned: int | None, timeout: float | None, label: str) -> Any:
    """The optimization's terminal status, its progress shown meanwhile (JobError on ``timeout``)."""
    with OptimizeProgress(job_id, planned, label=f"optimize {label}") as shown:
        status = client.wait(job_id, timeout=timeout, on_status=lambda seen: _shown(shown, seen))
    if not isinstance(status, OptimizeStatus):
        fail(f"job {job_id} is not an optimization")
    return status


def _shown(shown: OptimizeProgress, status: Any) -> None:
    """A status seen while following: on the progress bar, and its trials in the MLflow run."""
    shown.update(status)
    if isinstance(status, OptimizeStatus) and not status.finished:
        log_optimization_progress(status)


def _save(best: Module, output: Path | None) -> str:
    """Where the best program went: the file ``output``, else stdout (as JSON)."""
    if output is None:
        typer.echo(json.dumps(best.dump(), indent=2))
        return "printed on stdout"
    best.save(output)
    return f"saved to {output}"


def register(app: typer.Typer) -> None:
    """Add `dspex optimize` to the root command."""
    app.command("optimize", epilog=_EPILOG)(optimize_command)
