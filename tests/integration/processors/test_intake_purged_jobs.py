"""The intake's tasks-missing sweep leaves a purged job alone: its status was deleted on purpose
(`dspex purge` wrote a tombstone), and failing it would write a status back. A job that never had
a status is still swept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from dspex.processors.common import WorkerOptions
from dspex.processors.intake import Intake
from dspex.processors.jobcache import JobCache
from dspex.schemas import EvalJob, JobStatus, MetricSpec, encode
from dspex.streams.config import KafkaSettings
from dspex.streams.partitioner import partition_for
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def produce(settings: KafkaSettings, topic: str, key: str, value: bytes | None) -> None:
    producer = Producer(settings.confluent())
    partitions = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    producer.produce(topic, value, key=key.encode(), partition=partition_for(key, partitions))
    assert producer.flush(30) == 0


async def test_the_sweep_skips_a_purged_job(settings: KafkaSettings, registry: TopicRegistry) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    for job_id in ("purged", "never-ran"):
        job = EvalJob(
            job_id=job_id,
            candidate_ids=["c" * 32],
            metric=MetricSpec(name="exact_match:answer"),
            num_examples=2,
            created_at=long_ago,
        )
        produce(settings, registry.name("jobs"), job_id, encode(job))
    done = JobStatus(job_id="purged", state="completed", total_tasks=2, done=2)
    produce(settings, registry.name("status"), "purged", encode(done))
    produce(settings, registry.name("status"), "purged", None)  # what `dspex purge` writes

    intake = Intake(settings, WorkerOptions(prefix=registry.prefix, metrics=False), tasks_timeout_s=1.0)
    async with JobCache(settings, registry) as jobs:
        await jobs.wait_caught_up(30)
        intake.jobs = jobs
        assert jobs.purged("purged") and not jobs.purged("never-ran")
        stale = [job.job_id for job in intake._stale_jobs()]
    assert stale == ["never-ran"]
