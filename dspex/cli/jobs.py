"""`dspex eval | status | results | cancel`: evaluation jobs on the cluster, from the shell.

Exit codes: 0 ok; 1 failed (no broker, a bad dataset line, an unknown metric or job, a job that
failed or was cancelled), with the reason on stderr; 2 bad usage (typer).
"""

from __future__ import annotations

import csv
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
from dspex.client import Client
from dspex.client.progress import running_score
from dspex.client.results import records_table
from dspex.configuration import context
from dspex.errors import DspexError
from dspex.evaluate import EvaluationResult
from dspex.lm import LM
from dspex.metrics import resolve_metric
from dspex.primitives import Example, Module
from dspex.schemas import JobStatus, ScoreRecord, WorkerHeartbeat
from dspex.serialization import load
from dspex.streams.config import DEFAULT_BOOTSTRAP, KafkaSettings

__all__ = ["ALIVE_AFTER_S", "client_for", "load_program", "read_dataset", "register", "split_inputs"]

ALIVE_AFTER_S = 30.0
"""A worker whose last heartbeat is older than this is shown as not alive."""

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
    failure_score: Annotated[float, typer.Option("--failure-score", help="Score of a failed example.")] = 0.0,
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
    options: dict[str, Any] = {
        "name": name or program.stem, "failure_score": failure_score, "max_errors": max_errors,
        "max_cost_usd": max_cost,
    }  # fmt: skip
    with client_for(bootstrap, prefix, allow_modules=allow_module) as client, context(lm=context_lm):
        if not wait:
            job_id = client.evaluate(module, devset, metric, wait=False, **options)
            typer.echo(json.dumps({"job_id": job_id}) if as_json else job_id)
            return
        result = client.evaluate(
            module, devset, metric, display_progress=not as_json, timeout=timeout, **options
        )
        if isinstance(result, EvaluationResult):  # always, with wait=True
            _show_result(result, as_json)


def _show_result(result: EvaluationResult, as_json: bool) -> None:
    summary = {key: value for key, value in result.to_dict().items() if key != "results"}
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    typer.echo(
        f"{result.metric}: {result.score:.2f}% over {result.processed}/{result.total} examples "
        f"({result.errors} errors{', stopped early' if result.stopped_early else ''}); "
        f"{result.usage.total_tokens:,} tokens, ${result.usage.cost_usd:.4f}"
    )


# --------------------------------------------------------------------------- status


def status_command(
    job: Annotated[
        str | None, typer.Argument(metavar="[JOB]", help="A job id; none: the whole cluster.")
    ] = None,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
) -> None:
    """Show one job (state, progress, per-candidate scores), or every job, the workers alive and the
    lag of each worker group."""
    with client_for(bootstrap, prefix) as client:
        if job is not None:
            status = client.status(job)
            if status is None:
                fail(f"no job {job} on {client.registry.name('status')}")
            typer.echo(status.model_dump_json() if as_json else _describe_job(status))
            return
        overview = _overview(client)
    typer.echo(json.dumps(overview, default=str) if as_json else _describe_overview(overview))


def _overview(client: Client) -> dict[str, Any]:
    jobs = client.jobs()
    now = datetime.now(UTC)
    workers = [_worker_row(beat, now) for beat in client.workers()]
    try:
        lag: dict[str, Any] = {
            kind: {"group": found.group, "total": found.total, "by_topic": found.by_topic()}
            for kind, found in client.lag().items()
        }
    except DspexError as exc:
        lag = {"error": str(exc)}
    return {
        "jobs": [status.model_dump(mode="json") for status in jobs.values()],
        "workers": workers,
        "lag": lag,
    }


def _worker_row(beat: WorkerHeartbeat, now: datetime) -> dict[str, Any]:
    age = (now - beat.sent_at).total_seconds()
    return {**beat.model_dump(mode="json"), "age_s": round(age, 1), "alive": age <= ALIVE_AFTER_S}


def _describe_job(status: Any) -> str:
    lines = [f"job {status.job_id}{f' ({status.name})' if status.name else ''}: {status.state}"]
    if status.reason:
        lines.append(f"  reason: {status.reason}")
    if isinstance(status, JobStatus):
        lines.append(
            f"  progress: {status.done}/{status.total_tasks} tasks, {status.errors} errors, "
            f"score {running_score(status):.2f}%, {status.usage.total_tokens:,} tokens, "
            f"${status.usage.cost_usd:.4f}"
        )
        for c in status.candidates:
            lines.append(
                f"  candidate {c.candidate_id[:16]}: {c.score:.2f}% ({c.done}/{c.total}, {c.errors} errors)"
            )
    else:
        lines.append(f"  optimizer {status.optimizer}: {len(status.steps)} steps, best {status.best_score}")
    return "\n".join(lines)


def _describe_overview(overview: dict[str, Any]) -> str:
    lines = [f"jobs ({len(overview['jobs'])}):"]
    for job in overview["jobs"]:
        done = f"{job.get('done', '-')}/{job.get('total_tasks', '-')}"
        lines.append(f"  {job['job_id']}  {job['state']:<9}  {done:>13}  {job.get('name') or ''}")
    alive = [w for w in overview["workers"] if w["alive"]]
    lines.append(f"workers alive ({len(alive)} of {len(overview['workers'])} seen):")
    for w in overview["workers"]:
        state = "alive" if w["alive"] else f"silent {w['age_s']:.0f} s"
        lines.append(
            f"  {w['kind']:<9} {w['worker_id']}  {w['host']}:{w['pid']}  in flight {w['in_flight']}  {state}"
        )
    lines.append("lag per group:")
    if "error" in overview["lag"]:
        lines.append(f"  unavailable: {overview['lag']['error']}")
    for kind, found in overview["lag"].items():
        if kind != "error":
            lines.append(f"  {found['group']:<30} {found['total']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- results and cancel


def results_command(
    job: Annotated[str, typer.Argument(metavar="JOB", help="A job id.")],
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
        if stream:
            for record in client.iter_results(job):
                typer.echo(record.model_dump_json())
            return
        records = client.results(job)
        if not records and client.status(job) is None:
            fail(f"no job {job} on {client.registry.name('status')}")
    _print_records(records, output_format)


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
    job: Annotated[str, typer.Argument(metavar="JOB", help="A job id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; shown in the job's status.")] = "",
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
) -> None:
    """Stop a job: workers skip its remaining tasks and its status becomes cancelled."""
    with client_for(bootstrap, prefix) as client:
        status = client.status(job)
        if status is not None and status.finished:
            typer.echo(f"job {job} already {status.state}; nothing to cancel")
            return
        client.cancel(job, reason or "cancelled with `dspex cancel`")
    note = "" if status is not None else " (no status seen yet for it)"
    typer.echo(f"cancel requested for job {job}{note}")


def register(app: typer.Typer) -> None:
    """Add `dspex eval`, `status`, `results` and `cancel` to the root command."""
    app.command("eval", epilog=_EVAL_EPILOG)(eval_command)
    app.command("status", epilog="Example: dspex status --json  |  dspex status JOB")(status_command)
    app.command("results", epilog="Example: dspex results JOB --format csv > results.csv")(results_command)
    app.command("cancel", epilog="Example: dspex cancel JOB --reason 'wrong dataset'")(cancel_command)
