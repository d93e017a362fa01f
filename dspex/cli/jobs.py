"""`dspex eval | status | results | cancel`: evaluation jobs on the cluster, from the shell.

Exit codes: 0 ok; 1 failed (no broker, a bad dataset line, an unknown metric or job, a job that
failed or was cancelled), with the reason on stderr; 2 bad usage (typer).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from dspex.cli._common import DEFAULT_PREFIX, BootstrapOption, PrefixOption, fail, probe_or_exit
from dspex.cli._ids import SHORT_ID, ResolvedJob, on_jobs_topic, resolve_job
from dspex.cli._mlflow import MlflowUriOption, start_mlflow
from dspex.cli._status_view import ALIVE_AFTER_S, describe_job, describe_overview, job_batches, overview
from dspex.cli._tombstones import latest_is_tombstone
from dspex.client import Client
from dspex.client.results import records_table
from dspex.configuration import context, current_settings
from dspex.errors import DspexError
from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.metrics import resolve_metric
from dspex.primitives import Example, Module
from dspex.primitives.saving import load
from dspex.schemas import PRIORITIES, ScoreRecord
from dspex.streams.config import DEFAULT_BOOTSTRAP, KafkaSettings

__all__ = [
    "ALIVE_AFTER_S",
    "check_lms",
    "client_for",
    "load_program",
    "read_dataset",
    "register",
    "resolve",
    "split_inputs",
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Format = Literal["table", "json", "csv"]


# --------------------------------------------------------------------------- reading inputs


def read_dataset(path: Path, inputs: list[str]) -> list[Example]:
    """Examples from a JSONL file, each with ``inputs`` marked; DspexError naming file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DspexError(f"cannot read {path}: {exc}") from exc
    examples = [_example(path, number, line, inputs) for number, line in enumerate(lines, 1) if line.strip()]
    if not examples:
        raise DspexError(f"{path} holds no examples (one JSON object per line)")
    return examples


def _example(path: Path, number: int, line: str, inputs: list[str]) -> Example:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DspexError(f"{path}:{number}: not JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(row, dict):
        raise DspexError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    missing = [name for name in inputs if name not in row]
    if missing:
        raise DspexError(
            f"{path}:{number}: no input field {', '.join(map(repr, missing))} "
            f"(it has: {', '.join(row) or 'none'})"
        )
    return Example(row).with_inputs(*inputs)


def split_inputs(inputs: str) -> list[str]:
    names = [name.strip() for name in inputs.split(",") if name.strip()]
    if not names:
        raise typer.BadParameter(
            "name at least one input field, e.g. --inputs question", param_hint="--inputs"
        )
    return names


def load_program(path: Path, allow_modules: list[str] | None) -> Module:
    try:
        return load(path, allow_modules=allow_modules)
    except (OSError, DspexError) as exc:
        fail(f"cannot load the program {path}: {exc}")


@contextmanager
def client_for(bootstrap: str, prefix: str, **policy: Any) -> Iterator[Client]:
    settings = KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap)
    probe_or_exit(settings)
    try:
        with Client(kafka=settings, prefix=prefix, **policy) as client:
            yield client
    except DspexError as exc:
        fail(str(exc))


# --------------------------------------------------------------------------- eval

_EVAL_EPILOG = (
    "Example: dspex eval examples/arithmetic/program.json examples/arithmetic/dev.jsonl "
    "--inputs question --metric exact_match:answer --lm openai/simulated --api-base http://127.0.0.1:8000/v1"
)


def _priority(value: str | None) -> str | None:
    if value is not None and value not in PRIORITIES:
        raise typer.BadParameter(f"unknown priority {value!r}: use one of {', '.join(PRIORITIES)}")
    return value


PriorityOption = Annotated[
    str | None,
    typer.Option(
        "--priority",
        metavar="|".join(PRIORITIES),
        callback=_priority,
        help="Share of the workers against other jobs (default normal: a fair share, whatever the size).",
    ),
]


def eval_command(
    program: Annotated[
        Path, typer.Argument(metavar="PROGRAM.json", help="A program saved with module.save().")
    ],
    data: Annotated[Path, typer.Argument(metavar="DATA.jsonl", help="One JSON object per line.")],
    inputs: Annotated[str, typer.Option("--inputs", help="Input fields, comma-separated.")],
    metric: Annotated[
        str, typer.Option("--metric", help="A built-in (exact_match:answer) or an import path (pkg.mod:fn).")
    ],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job until it ends.")] = True,
    as_json: JsonOption = False,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", min=0, help="USD budget of the job.")
    ] = None,
    max_errors: Annotated[
        int | None, typer.Option("--max-errors", min=0, help="Failed examples allowed.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A label for the job.")] = None,
    priority: PriorityOption = None,
    num_threads: Annotated[
        int | None,
        typer.Option(
            "--num-threads", min=1, help="Examples run at once per predictor (more than allowed: clamped)."
        ),
    ] = None,
    failure_score: Annotated[float, typer.Option("--failure-score", help="Score of a failed example.")] = 0.0,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch/--online",
            help="LM calls through the provider's Batch API (about half the price, answered within hours; "
            "needs a `dspex worker provider-batch`).",
        ),
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0, help="Stop waiting after S seconds.")
    ] = None,
    lm: Annotated[
        str | None,
        typer.Option("--lm", metavar="PROVIDER/MODEL", help="LM for predictors without their own."),
    ] = None,
    api_base: Annotated[str | None, typer.Option("--api-base", help="API base of --lm.")] = None,
    api_key_env: Annotated[
        str | None, typer.Option("--api-key-env", help="Variable holding its key.")
    ] = None,
    allow_module: Annotated[
        list[str] | None, typer.Option("--allow-module", help="Refuse program/metric code outside these.")
    ] = None,
    mlflow_uri: MlflowUriOption = None,
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
) -> None:
    """Evaluate a saved program on a JSONL dataset through the cluster's workers.

    Everything is checked before anything is submitted: a dataset line that is not JSON or lacks
    an input field, or an unknown metric, exits 1 naming the file and line (or the metric).
    """
    fields = split_inputs(inputs)
    try:
        devset = read_dataset(data, fields)
        resolve_metric(metric, allow_modules=allow_module)
        context_lm = None if lm is None else LM(lm, api_base=api_base, api_key_env=api_key_env)
    except DspexError as exc:
        fail(str(exc))
    module = load_program(program, allow_module)
    check_lms(module, context_lm)
    start_mlflow(mlflow_uri)  # the result is logged when collected (Client's MLflow hook)
    options: dict[str, Any] = {
        "name": name or program.stem, "failure_score": failure_score, "max_errors": max_errors,
        "max_cost_usd": max_cost, "priority": priority, "num_threads": num_threads,
        "mode": "batch" if batch else "online",
    }  # fmt: skip
    with client_for(bootstrap, prefix, allow_modules=allow_module) as client, context(lm=context_lm):
        job_id = str(client.evaluate(module, devset, metric, wait=False, **options))
        if not wait:
            typer.echo(json.dumps({"job_id": job_id}) if as_json else job_id)
            return
        typer.echo(
            f"job {job_id} ({options['name']}) submitted; `dspex status {job_id[:SHORT_ID]}`", err=True
        )
        client.wait(job_id, timeout=timeout, display_progress=not as_json)
        [result] = client.collect(job_id)
    _show_result(job_id, result, as_json)


def check_lms(module: Module, lm: LM | None) -> None:
    """Exit 1 when a predictor has no LM and none is given (``--lm`` or the context): every one
    of its tasks would fail on the workers, which have no LM of their own."""
    if lm is not None or current_settings().lm is not None:
        return
    missing = [path for path, predictor in module.named_predictors() if predictor.lm is None]
    if missing:
        which = "the program's predictor" if missing == ["self"] else f"predictors {', '.join(missing)}"
        fail(
            f"no LM for {which}: pass "
            "--lm PROVIDER/MODEL (with --api-base and --api-key-env as needed), or save the program "
            "with an LM set on every predictor; nothing was submitted"
        )


def _show_result(job_id: str, result: EvaluationResult, as_json: bool) -> None:
    summary = {key: value for key, value in result.to_dict().items() if key != "results"}
    if as_json:
        typer.echo(json.dumps({"job_id": job_id, **summary}, default=str))
        return
    typer.echo(
        f"job {job_id}\n"
        f"{result.metric}: {result.score:.2f}% over {result.processed}/{result.total} examples "
        f"({result.errors} errors{', stopped early' if result.stopped_early else ''}); "
        f"{result.usage.total_tokens:,} tokens, ${result.usage.cost_usd:.4f}"
    )


# --------------------------------------------------------------------------- status


def status_command(
    job: Annotated[
        str | None,
        typer.Argument(metavar="[JOB]", help="A job id, or its first characters; none: the whole cluster."),
    ] = None,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
) -> None:
    """Show one job (state, times, progress, per-candidate scores), or every job oldest first, the
    workers alive and the lag of each worker group."""
    with client_for(bootstrap, prefix) as client:
        if job is not None:
            found = resolve(client, job, submitted=True)
            if as_json:
                typer.echo(_job_json(found))
            else:
                typer.echo(describe_job(found, datetime.now(UTC), job_batches(client, found)))
            return
        cluster = overview(client)
    typer.echo(json.dumps(cluster, default=str) if as_json else describe_overview(cluster))


def resolve(client: Client, given: str, *, submitted: bool = False) -> ResolvedJob:
    """The job ``given`` (an id or a unique prefix of one) names on ``client``'s cluster; see
    :func:`dspex.cli._ids.resolve_job`. ``submitted``: an exact id found only on the jobs topic
    counts too."""
    probe = None
    if submitted:
        jobs_topic = client.registry.name("jobs")
        probe = functools.partial(on_jobs_topic, client.settings, jobs_topic)
    status_topic = client.registry.name("status")
    purged = functools.partial(latest_is_tombstone, client.settings, status_topic)
    return resolve_job(client, given, where=status_topic, submitted=probe, purged=purged)


def _job_json(found: ResolvedJob) -> str:
    if found.status is None:
        return json.dumps({"job_id": found.job_id, "state": "submitted", "status": None})
    return str(found.status.model_dump_json())


# --------------------------------------------------------------------------- results and cancel


def results_command(
    job: Annotated[str, typer.Argument(metavar="JOB", help="A job id, or its first characters.")],
    output_format: Annotated[Format, typer.Option("--format", help="table, json (lines) or csv.")] = "table",
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Print JSON lines as they are read, in the topic's order, without holding every "
            "result first (for jobs of millions of examples); --format json only.",
        ),
    ] = False,
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
) -> None:
    """Print a job's per-example results (the first score per candidate and example wins)."""
    if stream and output_format != "json":
        fail(f"--stream prints JSON lines; it cannot be combined with --format {output_format}")
    with client_for(bootstrap, prefix) as client:
        found = resolve(client, job)
        job_id = found.job_id
        if stream:
            for record in client.iter_results(job_id):
                typer.echo(record.model_dump_json())
            return
        records = client.results(job_id)
    _print_records(records, output_format)
    note = found.status.unreported_note if found.status is not None else None
    if note is not None:
        typer.echo(f"job {job_id}: {note}", err=True)  # stderr: the records stay machine-readable


def _print_records(records: list[ScoreRecord], output_format: Format) -> None:
    if output_format == "json":
        for record in records:
            typer.echo(record.model_dump_json())
        return
    rows = records_table(records)
    columns = list(dict.fromkeys(key for row in rows for key in row)) or [
        "candidate_id",
        "example_index",
        "score",
    ]
    if output_format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: _cell(row.get(key, "")) for key in columns} for row in rows)
        return
    _print_table(rows, columns)


def _cell(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else json.dumps(value, default=str)


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    core = {"candidate_id", "example_index", "score"}
    shown = [c for c in columns if c in core or any(row.get(c) not in ("", None) for row in rows)]
    table = Table(title=f"{len(rows)} results")
    for column in shown:
        table.add_column("candidate" if column == "candidate_id" else column, overflow="fold")
    for row in rows:
        cells = {**row, "candidate_id": str(row.get("candidate_id", ""))[:12]}
        table.add_row(*(str(_cell(cells.get(column, "")))[:80] for column in shown))
    Console().print(table)


def cancel_command(
    job: Annotated[str, typer.Argument(metavar="JOB", help="A job id, or its first characters.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; shown in the job's status.")] = "",
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
) -> None:
    """Stop a job: workers skip its remaining tasks and its status becomes cancelled.

    A job the cluster does not know (no status, not on the jobs topic) exits 1.
    """
    with client_for(bootstrap, prefix) as client:
        found = resolve(client, job, submitted=True)
        status = found.status
        if status is not None and status.finished:
            typer.echo(f"job {found.job_id} already {status.state}; nothing to cancel")
            return
        client.cancel(found.job_id, reason or "cancelled with `dspex cancel`")
    note = "" if status is not None else " (submitted, no status seen yet for it)"
    typer.echo(f"cancel requested for job {found.job_id}{note}")


def register(app: typer.Typer) -> None:
    """Add `dspex eval`, `status`, `results` and `cancel` to the root command."""
    app.command("eval", epilog=_EVAL_EPILOG)(eval_command)
    app.command("status", epilog="Example: dspex status --json  |  dspex status JOB")(status_command)
    app.command("results", epilog="Example: dspex results JOB --format csv > results.csv")(results_command)
    app.command("cancel", epilog="Example: dspex cancel JOB --reason 'wrong dataset'")(cancel_command)
