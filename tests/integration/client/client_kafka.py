"""Test-side Kafka helpers for the client tests: read whole topics, and play the workers.

:class:`FakePipeline` is the test acting as predictor + scorer + aggregator with plain
confluent-kafka clients on the real broker: it consumes the job's tasks, writes ScoreRecords
(keyed by job id, murmur2-partitioned like every dspex producer) and JobStatus messages.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RawKafkaError

from dspex.schemas import (
    CandidateAggregate,
    ErrorInfo,
    JobStatus,
    ScoreRecord,
    Task,
    UsageRecord,
    decode,
    encode,
    headers_for,
    utc_now,
)
from dspex.streams.config import KafkaSettings
from dspex.streams.partitioner import partition_for
from dspex.streams.topics import TopicRegistry

__all__ = ["FakePipeline", "Outcome", "read_topic"]


def read_topic(settings: KafkaSettings, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every record of ``topic`` now (all partitions, from the beginning, up to the ends)."""
    consumer = Consumer(
        {
            **settings.confluent(),
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 20,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        return _drain(consumer, set(partitions), timeout)
    finally:
        consumer.close()


def _drain(consumer: Consumer, pending: set[int], timeout: float) -> list[Message]:
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.2):
            error = message.error()
            if error is None:
                found.append(message)
            elif error.code() == RawKafkaError._PARTITION_EOF:
                pending.discard(message.partition())
    if pending:
        raise TimeoutError(f"partitions {sorted(pending)} not read to their end in {timeout} s")
    return found


@dataclass
class Outcome:
    """What the fake workers decide for one task: outputs or an error, and a score."""

    score: float
    outputs: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    usage: UsageRecord = field(default_factory=lambda: UsageRecord(prompt_tokens=10, completion_tokens=2,
                                                                   cost_usd=0.001, lm_calls=1))  # fmt: skip


Decide = Callable[[Task], Outcome]


class FakePipeline:
    """Plays predictor, scorer and aggregator for one job in a thread of its own."""

    def __init__(self, settings: KafkaSettings, registry: TopicRegistry, decide: Decide) -> None:
        self.settings, self.registry, self.decide = settings, registry, decide
        self.final_state = "completed"
        self.reason: str | None = None
        self.duplicate_first = True
        self.scores_elsewhere = False  # write scores to another partition than their key's
        self.tasks: list[Task] = []
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, expected_tasks: int) -> None:
        self._thread = threading.Thread(target=self._guarded, args=(expected_tasks,), daemon=True)
        self._thread.start()

    def join(self, timeout: float = 60.0) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def _guarded(self, expected_tasks: int) -> None:
        try:
            self._run(expected_tasks)
        except BaseException as exc:  # handed to the test through join()
            self.error = exc

    def _run(self, expected_tasks: int) -> None:
        self.tasks = self._consume_tasks(expected_tasks)
        producer = Producer({**self.settings.confluent(), "partitioner": "murmur2_random"})
        job_id = self.tasks[0].job_id
        records = [self._score(task) for task in self.tasks]
        self._status(producer, job_id, "running", records[: len(records) // 2])
        elsewhere = self._other_partition(producer, job_id) if self.scores_elsewhere else None
        for record in records:
            self._produce(producer, "scores", job_id, record, partition=elsewhere)
        if self.duplicate_first:  # a redelivered task scored again, differently: the first must win
            flipped = records[0].model_copy(update={"score": 1 - records[0].score})
            self._produce(producer, "scores", job_id, flipped, partition=elsewhere)
        producer.flush(30)
        self._status(producer, job_id, self.final_state, records)
        producer.flush(30)

    def _other_partition(self, producer: Producer, job_id: str) -> int:
        """A scores partition that is not the one ``job_id`` hashes to (a differently-partitioning writer)."""
        topic = self.registry.name("scores")
        count = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
        return (partition_for(job_id, count) + 1) % count

    def _consume_tasks(self, expected: int) -> list[Task]:
        topic = self.registry.name("tasks")
        consumer = Consumer({**self.settings.confluent(), "group.id": f"fake-{uuid.uuid4().hex}",
                             "enable.auto.commit": False})  # fmt: skip
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        tasks: list[Task] = []
        deadline = time.monotonic() + 60
        try:
            while len(tasks) < expected and time.monotonic() < deadline:
                for message in consumer.consume(1000, 0.2):
                    if message.error() is None:
                        tasks.append(decode(message.value(), Task))
        finally:
            consumer.close()
        if len(tasks) < expected:
            raise TimeoutError(f"only {len(tasks)} of {expected} tasks arrived")
        return tasks

    def _score(self, task: Task) -> ScoreRecord:
        outcome = self.decide(task)
        return ScoreRecord(
            job_id=task.job_id,
            candidate_id=task.candidate_id,
            example_index=task.example_index,
            task_id=task.task_id,
            outputs=outcome.outputs,
            score=outcome.score,
            usage=outcome.usage,
            latency_s=0.01,
            error=outcome.error,
            worker_id="fake-scorer",
        )

    def _produce(
        self, producer: Producer, role: Any, key: str, model: Any, partition: int | None = None
    ) -> None:
        where = {} if partition is None else {"partition": partition}
        producer.produce(
            self.registry.name(role), encode(model), key=key.encode(), headers=headers_for(model), **where
        )
        producer.poll(0)

    def _status(self, producer: Producer, job_id: str, state: str, records: list[ScoreRecord]) -> None:
        status = aggregate(job_id, state, records, self.tasks)
        if state in {"failed", "cancelled"}:
            status = status.model_copy(update={"reason": self.reason})
        self._produce(producer, "status", job_id, status)


def aggregate(job_id: str, state: Any, records: list[ScoreRecord], tasks: list[Task]) -> JobStatus:
    """A JobStatus as the aggregator would write it for these records."""
    totals: dict[str, int] = {}
    for task in tasks:
        totals[task.candidate_id] = totals.get(task.candidate_id, 0) + 1
    candidates = []
    for cid, total in totals.items():
        mine = [r for r in records if r.candidate_id == cid]
        usage = sum((r.usage for r in mine), UsageRecord())
        aggregate = CandidateAggregate(
            candidate_id=cid,
            total=total,
            done=len(mine),
            errors=sum(r.failed for r in mine),
            score_sum=math.fsum(r.score for r in mine),
            usage=usage,
        )
        candidates.append(aggregate)
    return JobStatus(
        job_id=job_id,
        state=state,
        total_tasks=len(tasks),
        done=len(records),
        errors=sum(r.failed for r in records),
        candidates=candidates,
        usage=sum((c.usage for c in candidates), UsageRecord()),
        seq=len(records),
        started_at=utc_now(),
    )
