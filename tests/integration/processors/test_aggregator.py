"""The aggregator as a real faust worker process against a real broker.

Jobs and scores are written with confluent-kafka (murmur2 partitioner, lz4, as our workers
write them); the test follows the status topic and waits on what it says, never on sleeps.
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from dspex.schemas import (
    ErrorInfo,
    EvalJob,
    JobStatus,
    MetricSpec,
    ScoreRecord,
    StatusMessage,
    UsageRecord,
    WorkerHeartbeat,
    decode,
    encode,
    headers_for,
)
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.partitioner import partition_for
from dspex.streams.producer import PRODUCER_DEFAULTS
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = 500
CANDIDATES = ("cand-a", "cand-b")
DEADLINE_S = 120.0


@dataclass
class Aggregator:
    """One aggregator subprocess and its log."""

    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def pipeline(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Pipeline]:
    registry = TopicRegistry(topic_prefix)
    KafkaAdmin(KafkaSettings(bootstrap_servers=kafka_bootstrap)).ensure_topics(registry)
    pipe = Pipeline(kafka_bootstrap, registry, tmp_path)
    try:
        yield pipe
    finally:
        pipe.close()


class Pipeline:
    """Writes jobs and scores, runs aggregators, follows the status topic."""

    def __init__(self, bootstrap: str, registry: TopicRegistry, tmp_path: Path) -> None:
        self.bootstrap, self.registry, self.tmp_path = bootstrap, registry, tmp_path
        self.producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS})
        self.statuses: list[tuple[bytes, JobStatus]] = []
        self.aggregators: list[Aggregator] = []
        self._status = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{registry.prefix}test-reader",
                "enable.auto.commit": False,
            }
        )
        partitions = KafkaAdmin(KafkaSettings(bootstrap_servers=bootstrap)).partition_counts()
        status = registry.name("status")
        self._status.assign([TopicPartition(status, p, OFFSET_BEGINNING) for p in range(partitions[status])])

    def start_aggregator(self, *extra: str) -> Aggregator:
        log = self.tmp_path / f"aggregator-{len(self.aggregators)}.log"
        command = [
            sys.executable,
            "-m",
            "dspex.processors.aggregator",
            "--bootstrap",
            self.bootstrap,
            "--prefix",
            self.registry.prefix,
            "--data-dir",
            str(self.tmp_path / "faust"),
            "--fast-groups",
            "--loglevel",
            "info",
            "--worker-id",
            f"agg{len(self.aggregators)}",
            *extra,
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp_path)
        aggregator = Aggregator(process, log)
        self.aggregators.append(aggregator)
        return aggregator

    def send(self, role: str, message: EvalJob | ScoreRecord, *, value: bytes | None = None) -> None:
        self.producer.produce(
            self.registry.name(role),  # type: ignore[arg-type]
            key=message.job_id.encode(),
            value=encode(message) if value is None else value,
            headers=headers_for(message),
        )

    def flush(self) -> None:
        assert self.producer.flush(30) == 0

    def wait_for(
        self, job_id: str, aggregator: Aggregator, predicate: Callable[[JobStatus], bool]
    ) -> JobStatus:
        """Read statuses of ``job_id`` until one satisfies ``predicate`` (fails on deadline or crash)."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if aggregator.process.poll() is not None:
                pytest.fail(f"the aggregator exited ({aggregator.process.returncode}):\n{aggregator.tail()}")
            message = self._status.poll(0.5)
            if message is None or message.error() is not None or message.key() != job_id.encode():
                continue
            status = decode(message.value(), StatusMessage)
            assert isinstance(status, JobStatus)
            self.statuses.append((message.value(), status))
            if predicate(status):
                return status
        pytest.fail(
            f"no status of {job_id} matched in {DEADLINE_S} s; last: {self.statuses[-1:]}\n"
            f"{aggregator.tail()}"
        )

    def wait_all(
        self, job_ids: list[str], aggregator: Aggregator, predicate: Callable[[JobStatus], bool]
    ) -> dict[str, JobStatus]:
        """The first status of each job that satisfies ``predicate`` (fails on deadline or crash)."""
        found: dict[str, JobStatus] = {}
        keys = {job_id.encode() for job_id in job_ids}
        deadline = time.monotonic() + DEADLINE_S
        while len(found) < len(job_ids) and time.monotonic() < deadline:
            if aggregator.process.poll() is not None:
                pytest.fail(f"the aggregator exited ({aggregator.process.returncode}):\n{aggregator.tail()}")
            message = self._status.poll(0.5)
            if message is None or message.error() is not None or message.key() not in keys:
                continue
            status = decode(message.value(), StatusMessage)
            assert isinstance(status, JobStatus)
            if status.job_id not in found and predicate(status):
                found[status.job_id] = status
        if len(found) < len(job_ids):
            pytest.fail(f"only {sorted(found)} of {job_ids} matched in {DEADLINE_S} s\n{aggregator.tail()}")
        return found

    def committed_and_end(self) -> tuple[int, int]:
        """Offsets the aggregator's group committed on scores, summed, and the scores end offsets."""
        admin = KafkaAdmin(KafkaSettings(bootstrap_servers=self.bootstrap))
        scores = self.registry.name("scores")
        parts = [(scores, p) for p in range(admin.partition_counts([scores])[scores])]
        committed = admin.committed(f"{self.registry.prefix}aggregate", parts)
        return sum(committed.values()), sum(admin.end_offsets(parts).values())

    def commit_to_end(self) -> None:
        """Move the (empty) aggregate group's committed offsets on scores and jobs to their ends."""
        admin = KafkaAdmin(KafkaSettings(bootstrap_servers=self.bootstrap))
        names = [self.registry.name("scores"), self.registry.name("jobs")]
        counts = admin.partition_counts(names)
        ends = admin.end_offsets([(topic, p) for topic in names for p in range(counts[topic])])
        request = ConsumerGroupTopicPartitions(
            f"{self.registry.prefix}aggregate", [TopicPartition(t, p, end) for (t, p), end in ends.items()]
        )
        client = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + DEADLINE_S
        while True:  # the killed member holds the group until its session times out
            try:
                result = client.alter_consumer_group_offsets([request])[request.group_id].result()
                errors = [tp.error for tp in result.topic_partitions if tp.error is not None]
            except KafkaException as exc:
                errors = [exc]
            if not errors:
                return
            assert time.monotonic() < deadline, errors
            time.sleep(0.5)

    def close(self) -> None:
        for aggregator in self.aggregators:
            if aggregator.process.poll() is None:
                aggregator.process.kill()
                aggregator.process.wait()
        self._status.close()


def make_job(job_id: str) -> EvalJob:
    metric = MetricSpec(name="exact_match:answer")
    return EvalJob(job_id=job_id, candidate_ids=list(CANDIDATES), metric=metric, num_examples=EXAMPLES)


def make_score(job_id: str, candidate: str, index: int, *, late: bool = False) -> ScoreRecord:
    """A deterministic score; ``late`` ones are redeliveries with a different value (must be ignored)."""
    failed = index % 37 == 5
    value = 0.0 if failed or late else (index % 7) / 7
    return ScoreRecord(
        job_id=job_id,
        candidate_id=candidate,
        example_index=index,
        task_id=f"{job_id}:{candidate}:{index}",
        score=value,
        error=ErrorInfo(type="LMError", message="boom") if failed or late else None,
        usage=UsageRecord(
            prompt_tokens=10 + index % 3, completion_tokens=2, cost_usd=0.001 * (1 + index % 5), lm_calls=1
        ),
    )


def check_final(job_id: str, final: JobStatus) -> None:
    """Every count and sum exactly what the first scores say."""
    assert final.state == "completed" and final.total_tasks == EXAMPLES * len(CANDIDATES)
    firsts = {c: [make_score(job_id, c, i) for i in range(EXAMPLES)] for c in CANDIDATES}
    for candidate in CANDIDATES:
        aggregate = final.candidate(candidate)
        records = firsts[candidate]
        assert aggregate is not None
        assert (aggregate.done, aggregate.total) == (EXAMPLES, EXAMPLES)
        assert aggregate.errors == sum(r.error is not None for r in records)
        assert aggregate.score_sum == math.fsum(r.score for r in records)
        assert aggregate.score == round(100 * math.fsum(r.score for r in records) / EXAMPLES, 2)
        assert aggregate.usage.prompt_tokens == sum(r.usage.prompt_tokens for r in records)
        assert aggregate.usage.cost_usd == math.fsum(r.usage.cost_usd for r in records)
        assert aggregate.usage.lm_calls == EXAMPLES
    assert final.done == EXAMPLES * len(CANDIDATES)
    assert final.errors == sum(c.errors for c in final.candidates)


def send_scores(pipe: Pipeline, job_id: str, indices: range, *, duplicates_every: int = 10) -> None:
    for index in indices:
        for candidate in CANDIDATES:
            pipe.send("scores", make_score(job_id, candidate, index))
            if index % duplicates_every == 0:  # a redelivery right behind the original
                pipe.send("scores", make_score(job_id, candidate, index, late=True))
    pipe.flush()


def test_a_job_completes_with_exact_deduplicated_counts(pipeline: Pipeline) -> None:
    job_id = "job-exact"
    aggregator = pipeline.start_aggregator()
    pipeline.send("jobs", make_job(job_id))
    # a record nobody can read: counted and skipped, the aggregator carries on
    pipeline.send("scores", make_score(job_id, CANDIDATES[0], 0), value=b"\x00not json")
    send_scores(pipeline, job_id, range(0, 200))
    running = pipeline.wait_for(job_id, aggregator, lambda s: s.state == "running" and s.done >= 200)
    assert running.done == 400 and running.finished_at is None

    send_scores(pipeline, job_id, range(200, EXAMPLES))
    final = pipeline.wait_for(job_id, aggregator, lambda s: s.finished)
    check_final(job_id, final)
    raw_final = pipeline.statuses[-1][0]

    # a late duplicate of a finished job: the same terminal status once more, byte for byte
    pipeline.send("scores", make_score(job_id, CANDIDATES[1], 3, late=True))
    pipeline.flush()
    pipeline.wait_for(job_id, aggregator, lambda s: s.finished and s.seq == final.seq)
    assert pipeline.statuses[-1][0] == raw_final
    after = [status for _, status in pipeline.statuses if status.seq > final.seq]
    assert after == []  # nothing after the terminal status but itself
    assert [s.seq for _, s in pipeline.statuses] == sorted(s.seq for _, s in pipeline.statuses)

    # it says it is alive like every other worker, with the partitions it owns and its /metrics
    beat = wait_for_heartbeat(pipeline, aggregator, "agg0")
    scores_partitions = KafkaAdmin(KafkaSettings(bootstrap_servers=pipeline.bootstrap)).partition_counts()
    assert beat.kind == "aggregate" and beat.group_id == f"{pipeline.registry.prefix}aggregate"
    assert beat.assigned_partitions == scores_partitions[pipeline.registry.name("scores")]
    assert beat.metrics_url is not None and beat.metrics_url.startswith("http://127.0.0.1:")

    aggregator.process.send_signal(signal.SIGTERM)  # how a process manager stops it
    assert aggregator.process.wait(timeout=60) == 0, aggregator.tail()


def wait_for_heartbeat(pipe: Pipeline, aggregator: Aggregator, worker_id: str) -> WorkerHeartbeat:
    """The aggregator's latest heartbeat once it reports owning partitions."""
    from dspex.client import Client

    deadline = time.monotonic() + DEADLINE_S
    with Client(pipe.bootstrap, prefix=pipe.registry.prefix) as client:
        while time.monotonic() < deadline:
            if aggregator.process.poll() is not None:
                pytest.fail(f"the aggregator exited ({aggregator.process.returncode}):\n{aggregator.tail()}")
            beats = {beat.worker_id: beat for beat in client.workers()}
            if worker_id in beats and beats[worker_id].assigned_partitions > 0:
                return beats[worker_id]
            time.sleep(0.5)  # heartbeats come every 2 s; nothing finer to wait on
    pytest.fail(f"no heartbeat from {worker_id} within {DEADLINE_S} s:\n{aggregator.tail()}")


def test_a_killed_aggregator_recovers_its_tables_and_counts_nothing_twice(pipeline: Pipeline) -> None:
    job_id = "job-restart"
    # Commits only by count (after 300 acked records, when the next record is fetched): phase 1
    # gets committed when phase 2 arrives, phase 2 (fewer records) never is. The restarted
    # aggregator must then take phase 1 from its changelogs alone, and find every re-read
    # phase-2 score already in the recovered bitmaps.
    first = pipeline.start_aggregator("--commit-interval", "600", "--commit-every", "300")
    pipeline.send("jobs", make_job(job_id))
    send_scores(pipeline, job_id, range(0, 150))
    pipeline.wait_for(job_id, first, lambda s: s.done >= 300)
    send_scores(pipeline, job_id, range(150, 250))
    seen = pipeline.wait_for(job_id, first, lambda s: s.done >= 500)
    assert seen.state == "running" and seen.done == 500
    first.process.kill()  # SIGKILL: no flush, no commit, no goodbye
    first.process.wait()
    committed, end = pipeline.committed_and_end()
    assert 0 < committed < end  # some counted scores committed, some to be read again

    send_scores(pipeline, job_id, range(250, EXAMPLES))
    # and a redelivery of the whole first part (other values: only the first may count)
    for index in range(250):
        for candidate in CANDIDATES:
            pipeline.send("scores", make_score(job_id, candidate, index, late=True))
    pipeline.flush()
    second = pipeline.start_aggregator()
    final = pipeline.wait_for(job_id, second, lambda s: s.finished)
    check_final(job_id, final)


def test_a_restart_reads_again_what_the_committed_offsets_skipped(pipeline: Pipeline) -> None:
    """Committed offsets past records never applied (what faust's start-up race leaves) lose none."""
    scores_partitions = KafkaAdmin(KafkaSettings(bootstrap_servers=pipeline.bootstrap)).partition_counts(
        [pipeline.registry.name("scores")]
    )[pipeline.registry.name("scores")]
    jobs = _jobs_on_distinct_partitions(3, scores_partitions)
    first = pipeline.start_aggregator()
    for job_id in jobs[:2]:  # the third job's EvalJob comes only among the skipped records
        pipeline.send("jobs", make_job(job_id))
    for job_id in jobs:
        send_scores(pipeline, job_id, range(0, 100))
    pipeline.wait_all(jobs[:2], first, lambda s: s.done >= 200)
    first.process.kill()
    first.process.wait()

    # Records on three scores partitions and one jobs partition that no aggregator applies, then
    # committed over: only the aggregator's own record of what it applied can bring them back.
    pipeline.send("jobs", make_job(jobs[2]))
    for job_id in jobs:
        send_scores(pipeline, job_id, range(100, 300))
    pipeline.commit_to_end()
    committed, end = pipeline.committed_and_end()
    assert committed == end
    for job_id in jobs:
        send_scores(pipeline, job_id, range(300, EXAMPLES))
        for index in range(300):
            for candidate in CANDIDATES:
                pipeline.send("scores", make_score(job_id, candidate, index, late=True))
    pipeline.flush()

    second = pipeline.start_aggregator()
    for job_id, final in pipeline.wait_all(jobs, second, lambda s: s.finished).items():
        check_final(job_id, final)


def _jobs_on_distinct_partitions(count: int, partitions: int) -> list[str]:
    """Job ids whose records land on ``count`` different partitions (murmur2, like our producers)."""
    chosen: dict[int, str] = {}
    index = 0
    while len(chosen) < count:
        job_id = f"job-skip-{index}"
        chosen.setdefault(partition_for(job_id, partitions), job_id)
        index += 1
    return list(chosen.values())


def test_the_aggregator_consumer_long_polls_briefly(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    # faust hard-codes a 1.5 s long poll; with a job's scores on one partition that stalls the
    # busy partition behind a fetch of the idle ones (see dspex.processors.aggregate_fetch)
    from dspex.processors.aggregate_fetch import FETCH_MAX_WAIT_MS
    from dspex.processors.aggregator import build_aggregator
    from dspex.processors.aggregator_options import AggregatorOptions

    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    options = AggregatorOptions(prefix=topic_prefix, data_dir=tmp_path, fast_groups=True)
    aggregator = build_aggregator(settings, options)

    async def worker_consumer_wait_ms() -> int:  # aiokafka wants a running loop to build one
        thread = aggregator.app.consumer._thread
        consumer = thread._create_worker_consumer(aggregator.app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            # neither ever ran, so nothing else closes them: the consumer (never started) and
            # the event loop the consumer thread made for itself when it was built
            await consumer.stop()
            thread.thread_loop.close()

    assert asyncio.run(worker_consumer_wait_ms()) == FETCH_MAX_WAIT_MS == 100
