"""`dspex purge` and `dspex topics create --retention` against the real broker. The test writes an
optimization's statuses, checkpoint and programs itself (no workers), purges it, and reads the
compacted topics back: nothing is left for it, and a program another job uses stays.

Provider-batch answers (``lm-responses``, keyed by request hash) are written as the provider-batch
worker writes them: an answer found by its job id header, one found only through the job's parked
request on ``lm-requests`` (an answer from before the header), and one another job asked too are
deleted; an answer only another job asked for stays."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from typer.testing import CliRunner, Result

from dspex.cli import app
from dspex.schemas import (
    CandidateAggregate,
    JobStatus,
    OptimizerCheckpoint,
    OptimizeStatus,
    TrialRecord,
    encode,
)
from dspex.schemas.headers import HEADER_JOB_ID
from dspex.schemas.provider_batch import LMBatchAnswer, StoredAnswer
from dspex.streams.config import KafkaSettings
from dspex.streams.partitioner import partition_for
from dspex.streams.reader import CompactedReader
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

runner = CliRunner()
OPT, SUB_A, SUB_B, OTHER, RUNNING = (uuid.uuid4().hex for _ in range(5))


def evaluation(
    job_id: str, candidate: str, *, parent: str | None = None, state: str = "completed"
) -> JobStatus:
    return JobStatus(
        job_id=job_id, state=state, total_tasks=4, done=4 if state == "completed" else 1,
        candidates=[CandidateAggregate(candidate_id=candidate, total=4, done=4)], parent_job_id=parent,
    )  # fmt: skip


def write(settings: KafkaSettings, registry: TopicRegistry) -> None:
    optimization = OptimizeStatus(
        job_id=OPT, state="completed", optimizer="bootstrap-rs", best_candidate_id="best",
        steps=[TrialRecord(step=0, candidate_id="base", score=50.0, num_examples=4, eval_job_id=SUB_A)],
    )  # fmt: skip
    statuses = [
        optimization,
        evaluation(SUB_A, "base", parent=OPT),
        evaluation(SUB_B, "best", parent=OPT),
        evaluation(OTHER, "base"),
        evaluation(RUNNING, "solo", state="running"),
    ]
    records: list[Row] = [("status", s.job_id, encode(s), None) for s in statuses]
    checkpoint = OptimizerCheckpoint(job_id=OPT, step=0, optimizer="bootstrap-rs")
    records.append(("optimizer-state", OPT, encode(checkpoint), None))
    records += [("candidates", c, b'{"program": "test"}', None) for c in ("base", "best", "solo")]
    records += batch_records()
    producer = Producer(settings.confluent())
    for role, key, value, job in records:
        topic = registry.name(role)  # type: ignore[arg-type]
        count = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
        headers = [(HEADER_JOB_ID, job.encode())] if job else None
        producer.produce(topic, value, key=key.encode(), partition=partition_for(key, count), headers=headers)
    assert producer.flush(30) == 0


Row = tuple[str, str, bytes | None, str | None]  # role, key, value (None: tombstone), job id header


def batch_records() -> list[Row]:
    """Parked requests (``lm-requests``) and answers (``lm-responses``) of the purged jobs and another."""

    def answer(digest: str) -> bytes:
        return encode(
            LMBatchAnswer(request_hash=digest, batch_id="b1", answer=StoredAnswer(status=200, body={}))
        )

    parked = b'{"parked": "test"}'  # purge reads keys and headers only
    return [
        ("lm-requests", "h-sub", parked, SUB_A),
        ("lm-requests", "h-shared", parked, SUB_A),
        ("lm-requests", "h-shared", parked, OTHER),
        ("lm-requests", "h-other", parked, OTHER),
        ("lm-responses", "h-sub", answer("h-sub"), None),  # written before answers named their job
        ("lm-responses", "h-named", answer("h-named"), SUB_B),  # its request gone from lm-requests
        ("lm-responses", "h-shared", answer("h-shared"), OTHER),
        ("lm-responses", "h-other", answer("h-other"), OTHER),
        ("lm-responses", "h-gone", answer("h-gone"), OPT),
        ("lm-responses", "h-gone", None, None),  # deleted already: nothing to count
    ]


async def keys(settings: KafkaSettings, topic: str) -> set[str]:
    reader: CompactedReader[bytes] = CompactedReader(settings, topic)
    async with reader:
        await reader.wait_caught_up(30)
        return set(reader.snapshot())


@pytest.fixture
def cli(settings: KafkaSettings, registry: TopicRegistry) -> Any:
    write(settings, registry)

    def invoke(*args: str, stdin: str | None = None) -> Result:
        options = ["--bootstrap", settings.bootstrap_servers, "--prefix", registry.prefix]
        return runner.invoke(app, [*args, *options], input=stdin)

    return invoke


def test_purge_tombstones_an_optimization_and_keeps_what_others_use(
    cli: Any, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    declined = cli("purge", OPT, stdin="n\n")
    assert declined.exit_code == 1 and "purge these records?" in declined.output
    assert OPT in asyncio.run(keys(settings, registry.name("status")))  # nothing deleted

    purged = cli("purge", OPT[:8], "--yes")
    assert purged.exit_code == 0, purged.output
    assert f"purge job {OPT} and its 2 sub-jobs" in purged.output
    assert "kept: 1 program(s) other jobs also use" in purged.output
    answers = registry.name("lm-responses")
    assert f"{answers}: 3 provider-batch answer(s) (1 also asked by other jobs)" in purged.output
    for role in ("jobs", "tasks", "predictions", "scores", "dlq", "blobs"):
        assert registry.name(role) in purged.output  # listed with what stays until retention ends  # type: ignore[arg-type]

    assert asyncio.run(keys(settings, registry.name("status"))) == {OTHER, RUNNING}
    assert asyncio.run(keys(settings, registry.name("candidates"))) == {"base", "solo"}
    assert asyncio.run(keys(settings, registry.name("optimizer-state"))) == set()
    assert asyncio.run(keys(settings, answers)) == {"h-other"}
    for command in (("results", SUB_A), ("status", OPT), ("cancel", SUB_B)):
        gone = cli(*command)
        assert gone.exit_code == 1, (command, gone.output)
        assert f"job {command[1]} was purged" in gone.output


def test_purge_refuses_a_running_job_without_force(
    cli: Any, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    refused = cli("purge", RUNNING, "--yes")
    assert refused.exit_code == 1
    assert f"job {RUNNING} is running; cancel it first, or pass --force" in refused.output
    assert RUNNING in asyncio.run(keys(settings, registry.name("status")))


def in_effect(admin: AdminClient, wanted: dict[str, tuple[str, str]]) -> dict[str, str]:
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in wanted])
    return {
        resource.name: future.result(timeout=30)[wanted[resource.name][0]].value
        for resource, future in described.items()
    }


def test_topics_create_sets_retention_per_class_on_existing_topics(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    options = ["--bootstrap", settings.bootstrap_servers, "--prefix", registry.prefix]
    made = runner.invoke(
        app, ["topics", "create", *options, "--retention", "results=30d", "--retention", "state=1h"]
    )
    assert made.exit_code == 0, made.output
    scores = f"exists  {registry.name('scores')} (8 partitions, retention 30d); set retention.ms=2592000000"
    assert scores in made.output
    wanted = {
        registry.name("scores"): ("retention.ms", "2592000000"),
        registry.name("jobs"): ("retention.ms", "2592000000"),
        registry.name("status"): ("max.compaction.lag.ms", "3600000"),
        registry.name("candidates"): ("max.compaction.lag.ms", "3600000"),
    }
    admin = AdminClient(settings.confluent())
    deadline = time.monotonic() + 30  # the controller's change reaches the broker's view in seconds
    while (found := in_effect(admin, wanted)) != {topic: value for topic, (_, value) in wanted.items()}:
        assert time.monotonic() < deadline, found
        time.sleep(0.5)
    bad = runner.invoke(app, ["topics", "create", *options, "--retention", "scores=7d"])
    assert bad.exit_code == 2 and "CLASS one of" in " ".join(bad.output.split())
