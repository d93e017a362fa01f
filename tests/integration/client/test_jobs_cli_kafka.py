"""`dspex eval | status | results | cancel` against the real broker, with the test playing the workers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import typer
from client_kafka import FakePipeline, Outcome, read_topic
from typer.testing import CliRunner

import dspex
from dspex.cli import jobs
from dspex.schemas import Cancel, JobMessage, Task, decode
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry
from dspex.testing import arithmetic_rows

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

runner = CliRunner()
N = 12


@pytest.fixture
def app() -> typer.Typer:
    made = typer.Typer()
    jobs.register(made)
    return made


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    program, data = tmp_path / "qa.json", tmp_path / "dev.jsonl"
    dspex.Predict("question -> answer").save(program)
    data.write_text("".join(json.dumps(row) + "\n" for row in arithmetic_rows(N, seed=2)), "utf-8")
    return program, data


def _kafka(settings: KafkaSettings, registry: TopicRegistry) -> list[str]:
    return ["--bootstrap", settings.bootstrap_servers, "--prefix", registry.prefix]


def _eval_args(files: tuple[Path, Path]) -> list[str]:
    # --lm: the program has none, and eval refuses a program whose predictors have no LM
    return ["eval", str(files[0]), str(files[1]), "--inputs", "question", "--metric", "exact_match:answer",
            "--lm", "openai/test-model"]  # fmt: skip


def half_right(task: Task) -> Outcome:
    ok = task.example_index % 2 == 0
    return Outcome(score=float(ok), outputs={"answer": task.example["answer"] if ok else "-1"})


def _end_offsets(settings: KafkaSettings, registry: TopicRegistry, role: str) -> int:
    admin, topic = KafkaAdmin(settings), registry.name(role)  # type: ignore[arg-type]
    count = admin.partition_counts([topic])[topic]
    return sum(admin.end_offsets([(topic, p) for p in range(count)]).values())


def test_a_bad_dataset_line_submits_nothing(
    app: typer.Typer, files: tuple[Path, Path], settings: KafkaSettings, registry: TopicRegistry
) -> None:
    with files[1].open("a", encoding="utf-8") as handle:
        handle.write("not json at all\n")
    result = runner.invoke(app, [*_eval_args(files), *_kafka(settings, registry)])
    assert result.exit_code == 1
    assert f"{files[1]}:{N + 1}: not JSON" in result.stderr
    assert [_end_offsets(settings, registry, role) for role in ("candidates", "jobs", "tasks")] == [0, 0, 0]


def test_status_of_an_unknown_job_says_so(
    app: typer.Typer, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    result = runner.invoke(app, ["status", "no-such-job", *_kafka(settings, registry)])
    assert result.exit_code == 1
    assert f"no job no-such-job on {registry.name('status')}" in result.stderr
    result = runner.invoke(app, ["results", "no-such-job", *_kafka(settings, registry)])
    assert result.exit_code == 1 and "no job no-such-job" in result.stderr


def test_eval_wait_then_status_results_and_cancel_agree(
    app: typer.Typer, files: tuple[Path, Path], settings: KafkaSettings, registry: TopicRegistry
) -> None:
    pipeline = FakePipeline(settings, registry, half_right)
    pipeline.start(expected_tasks=N)
    result = runner.invoke(
        app, [*_eval_args(files), "--json", "--name", "cli-test", *_kafka(settings, registry)]
    )
    pipeline.join()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["score"], summary["processed"], summary["errors"]) == (50.0, N, 0)
    job_id = pipeline.tasks[0].job_id
    assert summary["job_id"] == job_id
    assert f"job {job_id} (cli-test) submitted" in result.stderr

    status = json.loads(runner.invoke(app, ["status", job_id, "--json", *_kafka(settings, registry)]).stdout)
    assert (status["state"], status["done"], status["total_tasks"]) == ("completed", N, N)
    text = runner.invoke(app, ["status", job_id, *_kafka(settings, registry)]).stdout
    assert f"job {job_id}: completed" in text and "score 50.00%" in text

    lines = runner.invoke(app, ["results", job_id, "--format", "json", *_kafka(settings, registry)]).stdout
    records = [json.loads(line) for line in lines.splitlines()]
    assert [r["example_index"] for r in records] == list(range(N))  # the duplicate is gone
    assert sum(r["score"] for r in records) == N / 2
    stream_args = ["results", job_id, "--format", "json", "--stream", *_kafka(settings, registry)]
    streamed = [json.loads(line) for line in runner.invoke(app, stream_args).stdout.splitlines()]
    assert sorted((r["example_index"], r["score"]) for r in streamed) == [
        (r["example_index"], r["score"]) for r in records
    ]
    refused = runner.invoke(app, ["results", job_id, "--stream", *_kafka(settings, registry)])
    assert refused.exit_code == 1 and "--stream prints JSON lines" in refused.stderr
    table = runner.invoke(app, ["results", job_id, "--format", "csv", *_kafka(settings, registry)]).stdout
    rows = list(csv.DictReader(io.StringIO(table)))
    assert len(rows) == N and rows[1]["pred_answer"] == "-1"

    overview = json.loads(runner.invoke(app, ["status", "--json", *_kafka(settings, registry)]).stdout)
    assert [job["job_id"] for job in overview["jobs"]] == [job_id]
    assert sorted(overview["lag"]) == ["aggregate", "intake", "predict", "score"]
    assert overview["lag"]["intake"]["total"] == 0  # no submit message was produced
    assert overview["lag"]["predict"]["total"] == N  # nobody in the predict group consumed the tasks
    assert overview["workers"] == []

    done = runner.invoke(app, ["cancel", job_id, *_kafka(settings, registry)])
    assert done.exit_code == 0 and "already completed" in done.stdout


def test_eval_no_wait_prints_the_job_id_and_cancel_writes_a_cancel(
    app: typer.Typer, files: tuple[Path, Path], settings: KafkaSettings, registry: TopicRegistry
) -> None:
    result = runner.invoke(app, [*_eval_args(files), "--no-wait", "--json", *_kafka(settings, registry)])
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.stdout)["job_id"]
    assert _end_offsets(settings, registry, "tasks") == N

    cancelled = runner.invoke(
        app, ["cancel", job_id, "--reason", "changed my mind", *_kafka(settings, registry)]
    )
    assert cancelled.exit_code == 0, cancelled.output
    assert f"cancel requested for job {job_id}" in cancelled.stdout
    messages = [decode(m.value(), JobMessage) for m in read_topic(settings, registry.name("jobs"))]
    assert [type(m).__name__ for m in messages] == ["EvalJob", "Cancel"]
    assert isinstance(messages[1], Cancel) and messages[1].reason == "changed my mind"
