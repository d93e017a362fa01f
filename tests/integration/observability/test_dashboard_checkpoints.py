"""The dashboard reads a GEPA optimization's latest checkpoint from a real broker's optimizer-state
topic (the job's partition only), and reads it again only once the job's status has moved on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from dspex.observability.dashboard.pareto_routes import KafkaCheckpoints, read_latest_checkpoint
from dspex.schemas import OptimizerCheckpoint, OptimizeStatus
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

JOB, OTHER = "opt-gepa-a", "opt-gepa-b"


def checkpoint(job_id: str, step: int) -> OptimizerCheckpoint:
    gepa = {"program_candidates": [{"self": f"instruction {i}"} for i in range(step)]}
    state = {"state": {"version": 1, "max_metric_calls": 30, "gepa_state": gepa}}
    return OptimizerCheckpoint(job_id=job_id, step=step, optimizer="gepa", state=state)


async def write(settings: KafkaSettings, registry: TopicRegistry, *checkpoints: OptimizerCheckpoint) -> None:
    async with AsyncProducer(settings) as producer:
        for one in checkpoints:
            await producer.produce_record(
                registry.name("optimizer-state"), to_record(one, role="optimizer-state")
            )


def test_the_latest_checkpoint_is_read_once_per_status(kafka_bootstrap: str, topic_prefix: str) -> None:
    settings, registry = KafkaSettings(bootstrap_servers=kafka_bootstrap), TopicRegistry(topic_prefix)
    ensure_topics(settings, registry)
    started = datetime.now(UTC) - timedelta(seconds=5)
    asyncio.run(write(settings, registry, checkpoint(JOB, 1), checkpoint(OTHER, 5), checkpoint(JOB, 2)))

    found = read_latest_checkpoint(settings, registry, JOB, started)
    assert found is not None and (found.job_id, found.step) == (JOB, 2)
    assert read_latest_checkpoint(settings, registry, "opt-none", started) is None

    async def follow() -> list[int | None]:
        reader = KafkaCheckpoints(settings, registry)
        status = OptimizeStatus(job_id=JOB, state="running", optimizer="gepa", seq=2, started_at=started)
        steps = [await _step(reader, status)]
        await write(settings, registry, checkpoint(JOB, 3))
        steps.append(await _step(reader, status))  # the same status: the checkpoint read for it
        moved = status.model_copy(update={"seq": 3, "updated_at": datetime.now(UTC)})
        steps.append(await _step(reader, moved))
        return steps

    assert asyncio.run(follow()) == [2, 2, 3]


async def _step(reader: KafkaCheckpoints, status: OptimizeStatus) -> int | None:
    found = await reader.latest(status)
    return found.step if found is not None else None
