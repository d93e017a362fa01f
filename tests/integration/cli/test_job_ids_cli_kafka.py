"""Job ids through the CLI against the real broker: printed at submission, accepted as unique
prefixes by status / results / cancel, ambiguous prefixes listed, unknown ids exit 1, and
`dspex status` in submit order with times and ages. The test writes the statuses itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner, Result

import dspex
from dspex.cli import app
from dspex.client._reader import PartitionReader
from dspex.schemas import Cancel, JobMessage, JobStatus, OptimizeStatus, decode, encode, headers_for
from dspex.streams.config import KafkaSettings
from dspex.streams.partitioner import partition_for
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

runner = CliRunner()

# Two ids share "aaaa1111"; the optimization's is unique from its first character.
OLDEST, MIDDLE, NEWEST = "aaaa1111" + "0" * 24, "aaaa1111" + "f" * 24, "bbbb" + "2" * 28


def _statuses(now: datetime) -> list[Any]:
    return [  # written newest first: the order on the topic must not decide the listing
        OptimizeStatus(
            job_id=NEWEST, name="opt", state="running", optimizer="bootstrap-rs",
            started_at=now - timedelta(minutes=1),
        ),
        JobStatus(
            job_id=MIDDLE, name="middle", state="running", total_tasks=10, done=3,
            started_at=now - timedelta(minutes=5),
        ),
        JobStatus(
            job_id=OLDEST, name="oldest", state="completed", total_tasks=4, done=4,
            started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=1, minutes=59),
        ),
    ]  # fmt: skip


def _write(settings: KafkaSettings, registry: TopicRegistry, records: list[Any]) -> None:
    producer = Producer(settings.confluent())
    topic = registry.name("status")
    count = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    for record in records:
        producer.produce(
            topic,
            encode(record),
            key=record.job_id.encode(),
            headers=headers_for(record),
            partition=partition_for(record.job_id, count),
        )
    assert producer.flush(30) == 0


@pytest.fixture
def now() -> datetime:
    # Taken when the test runs (not when the module is collected), so the ages shown are the ones set.
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def cli(settings: KafkaSettings, registry: TopicRegistry, now: datetime) -> Any:
    _write(settings, registry, _statuses(now))

    def invoke(*args: str) -> Result:
        return runner.invoke(
            app, [*args, "--bootstrap", settings.bootstrap_servers, "--prefix", registry.prefix]
        )

    return invoke


def test_status_lists_jobs_oldest_first_with_times_and_ages(cli: Any, now: datetime) -> None:
    overview = json.loads(cli("status", "--json").stdout)
    assert [job["job_id"] for job in overview["jobs"]] == [OLDEST, MIDDLE, NEWEST]
    ages = [job["age_s"] for job in overview["jobs"]]
    assert ages[0] > ages[1] > ages[2] >= 60

    text = cli("status").stdout
    lines = text.splitlines()
    assert lines[0] == "jobs (3, oldest first):"
    assert lines[1].split()[:4] == ["JOB", "KIND", "STATE", "PROGRESS"]
    # ids cut to 12 characters; each line has its start and age
    assert lines[2].split()[:4] == ["aaaa11110000", "eval", "completed", "4/4"]
    assert lines[3].split()[:3] == ["aaaa1111ffff", "eval", "running"]
    assert lines[4].split()[:3] == ["bbbb22222222", "optimize", "running"]
    assert (now - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%SZ") in lines[2]
    assert " 2h00m " in lines[2] or " 1h59m " in lines[2] or " 2h01m " in lines[2]
    again = cli("status").stdout.splitlines()[:5]
    assert [line.split()[:2] for line in again] == [line.split()[:2] for line in lines[:5]]  # same order


def test_a_unique_prefix_names_the_job_everywhere(cli: Any) -> None:
    shown = cli("status", "bbbb")
    assert shown.exit_code == 0, shown.output
    assert f"job {NEWEST} (opt): running" in shown.stdout and "started " in shown.stdout
    detail = cli("status", "aaaa11110")
    assert f"job {OLDEST} (oldest): completed" in detail.stdout and "took 1m00s" in detail.stdout
    assert json.loads(cli("status", "aaaa1111f", "--json").stdout)["job_id"] == MIDDLE

    results = cli("results", "aaaa11110", "--format", "json")
    assert results.exit_code == 0 and results.stdout == ""  # a known job without scores: nothing

    done = cli("cancel", "aaaa11110")
    assert done.exit_code == 0 and f"job {OLDEST} already completed" in done.stdout


def test_an_ambiguous_prefix_is_a_usage_error_listing_the_candidates(cli: Any) -> None:
    for command in ("status", "results", "cancel"):
        result = cli(command, "aaaa")
        assert result.exit_code == 2, (command, result.output)
        assert "'aaaa' matches 2 jobs" in result.output
        assert OLDEST in result.output and MIDDLE in result.output and NEWEST not in result.output


def test_unknown_jobs_exit_1(cli: Any, settings: KafkaSettings, registry: TopicRegistry) -> None:
    for command in ("status", "results", "cancel"):
        result = cli(command, "cccc")
        assert result.exit_code == 1, (command, result.output)
        assert f"no job cccc on {registry.name('status')}" in result.stderr


def test_cancel_by_prefix_writes_the_full_id(
    cli: Any, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    result = cli("cancel", "aaaa1111f", "--reason", "wrong data")
    assert result.exit_code == 0, result.output
    assert f"cancel requested for job {MIDDLE}" in result.stdout
    messages = [decode(m.value(), JobMessage) for m in _read_all(settings, registry.name("jobs"))]
    assert [(type(m).__name__, m.job_id) for m in messages] == [("Cancel", MIDDLE)]
    assert isinstance(messages[0], Cancel) and messages[0].reason == "wrong data"


def test_eval_no_wait_prints_the_id_that_status_then_accepts(
    cli: Any, tmp_path: Path, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    program, data = tmp_path / "qa.json", tmp_path / "dev.jsonl"
    dspex.Predict("question -> answer").save(program)
    data.write_text('{"question": "1+1?", "answer": "2"}\n', "utf-8")
    args = ["eval", str(program), str(data), "--inputs", "question", "--metric", "exact_match:answer"]
    submitted = cli(*args, "--lm", "openai/test-model", "--no-wait", "--json", "--name", "quick")
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.stdout)["job_id"]
    assert len(job_id) == 32
    # No aggregator runs here: the job has no status, yet its full id is known from the jobs topic.
    pending = cli("status", job_id)
    assert pending.exit_code == 0 and f"job {job_id}: submitted, no status yet" in pending.stdout
    cancelled = cli("cancel", job_id)
    assert cancelled.exit_code == 0 and "submitted, no status seen yet" in cancelled.stdout


def _read_all(settings: KafkaSettings, topic: str) -> list[Any]:
    reader = PartitionReader(settings, topic)
    try:
        reader.assign(dict.fromkeys(range(reader.partition_count())))
        return reader.read_to_end()
    finally:
        reader.close()
