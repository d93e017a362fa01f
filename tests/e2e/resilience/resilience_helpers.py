"""What the resilience tests share: a pipeline of real worker processes, jobs, and exact-count checks.

Every test runs `dspex worker ...` processes (LocalStack) against a real broker and the simulated LM
(a simulation, not a model), submits evaluations with ``dspex.Client``, and steps mid-job on events
(counters of the simulated LM, heartbeats), never on sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from dspex.client import Client
from dspex.configuration import context
from dspex.dev import DevBroker
from dspex.dev._system import tail
from dspex.dev.stack import LocalStack, WorkerKind, WorkerProcess
from dspex.errors import JobError, KafkaError
from dspex.evaluate import Evaluate, EvaluationResult
from dspex.lm import LM
from dspex.metrics import metric_from_name
from dspex.modules import ChainOfThought
from dspex.observability.lag import pipeline_groups
from dspex.primitives import Example, Module
from dspex.schemas import JobStatus, WorkerHeartbeat
from dspex.signatures import make_signature
from dspex.streams.admin import group_lag
from dspex.streams.config import KafkaSettings
from dspex.testing import arithmetic_dataset

INSTRUCTIONS = "Answer the arithmetic question with a number."
METRIC = "numeric_equal:answer"
READY_TIMEOUT_S = 90.0


def program() -> Module:
    """The program every resilience job evaluates (as ``dspex demo``)."""
    return ChainOfThought(make_signature("question -> answer", INSTRUCTIONS))


def devset(n: int, seed: int = 11) -> list[Example]:
    return arithmetic_dataset(n, seed=seed)


def sim_lm(base_url: str, **kwargs: Any) -> LM:
    return LM("openai/simulated", api_base=base_url, cache=False, **kwargs)


def local_scores(base_url: str, examples: Sequence[Example]) -> list[float]:
    """Per-example scores of a local Evaluate on the same (deterministic) simulated LM."""
    evaluate = Evaluate(devset=list(examples), metric=metric_from_name(METRIC), concurrency=128)
    with context(lm=sim_lm(base_url)):
        result = evaluate(program())
    assert result.errors == 0, result.error_messages
    return [score for _, _, score in result.results]


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    """Re-check ``condition`` until it holds; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


@dataclass
class Pipeline:
    """Worker processes of one test (one topic prefix) and a client to drive them."""

    bootstrap: str
    prefix: str
    work_dir: Path
    kafka: KafkaSettings | None = None
    env: dict[str, str] = field(default_factory=dict)
    broker: DevBroker | None = None  # a broker of the test's own: its state and log join a failure report
    stack: LocalStack = field(init=False)
    client: Client = field(init=False)

    def __post_init__(self) -> None:
        self.stack = LocalStack(
            bootstrap=self.bootstrap, prefix=self.prefix, work_dir=self.work_dir, env=self.env
        )
        self.client = Client(
            self.bootstrap if self.kafka is None else None, prefix=self.prefix, kafka=self.kafka
        )

    def start(self, kind: WorkerKind, *args: str) -> WorkerProcess:
        return self.stack.start(kind, *args)

    def heartbeats(self) -> dict[str, WorkerHeartbeat]:
        return {beat.worker_id: beat for beat in self.client.workers()}

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every predictor and scorer has a heartbeat with assigned partitions."""
        expected = {w.name for w in self.stack.workers if w.kind != "aggregate"}

        def ready() -> bool:
            self.stack.check_running()
            try:
                beats = self.heartbeats()
            except KafkaError:  # e.g. the workers topic is new and its leader not elected yet
                return False
            return all(name in beats and beats[name].assigned_partitions > 0 for name in expected)

        wait_for(ready, timeout, f"heartbeats with partitions from {sorted(expected)}", poll=0.5)

    def submit(self, examples: Sequence[Example], lm: LM, **options: Any) -> str:
        with context(lm=lm):
            job_id = self.client.evaluate(
                program(), list(examples), METRIC, wait=False, display_progress=False, **options
            )
        return cast(str, job_id)

    def finish(self, job_id: str, timeout: float) -> tuple[JobStatus, EvaluationResult]:
        """Wait for the job's final status and read its result.

        When the job does not finish in time, the failure carries what is needed to tell which
        process stopped: each group's state and members, its lag, and every worker's stacks and log.
        """
        try:
            status = self.client.wait(job_id, timeout=timeout)
        except JobError as exc:
            raise AssertionError(f"{exc}\n{self.report()}") from exc
        assert isinstance(status, JobStatus), status
        results = self.client.collect(job_id)
        return status, results[0]

    def report(self) -> str:
        """Consumer groups (state, members, lag), then each worker's log tail and stacks."""
        groups = pipeline_groups(self.prefix)
        sections = [_group_report(self.client.settings, group, topics) for group, topics in groups.items()]
        if self.broker is not None:
            sections.append(_broker_report(self.broker))
        logged = {worker.name: worker.log_path.stat().st_size for worker in self.stack.workers}
        tails = {worker.name: worker.log_tail(60) for worker in self.stack.workers}
        for worker in self.stack.alive():
            # the worker CLI (faulthandler) writes every thread's stack to its log; faust's worker
            # (the aggregator) writes its asyncio tasks'
            os.kill(worker.pid, signal.SIGUSR1)
        time.sleep(1.0)
        for worker in self.stack.workers:
            with worker.log_path.open(errors="replace") as log:
                log.seek(logged[worker.name])
                stacks = "".join(log.readlines()[:200])
            state = "running" if worker.alive else f"exited {worker.process.returncode}"
            header = f"--- {worker.name} (pid {worker.pid}, {state}; {worker.log_path}):"
            sections.append(f"{header}\n{tails[worker.name]}\n{stacks}")
        return "\n".join(sections)

    def close(self) -> None:
        self.stack.stop_all()
        self.client.close()


def _broker_report(broker: DevBroker) -> str:
    status = broker.status()
    try:
        lines = broker.log_file.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    troubles = [line for line in lines if " WARN " in line or " ERROR " in line][-40:]
    groups = [line for line in lines if "GroupCoordinator" in line][-30:]
    return "\n".join(
        [
            f"--- broker {status.bootstrap}: {status.state} (pid {status.pid})",
            f"broker.out:\n{tail(broker.data_dir / 'broker.out', 20)}",
            "broker.log, its last warnings and errors:",
            *troubles,
            "broker.log, its last group-coordinator lines:",
            *groups,
            f"broker.log, its end:\n{tail(broker.log_file, 15)}",
        ]
    )


def _group_report(settings: KafkaSettings, group: str, topics: list[str]) -> str:
    lines = [f"--- group {group}:"]
    admin = AdminClient(settings.confluent())
    try:
        [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
        description = future.result(timeout=15)
        lines.append(f"state {description.state}, coordinator {description.coordinator.id}")
        for member in description.members:
            owned = sorted(f"{tp.topic}[{tp.partition}]" for tp in member.assignment.topic_partitions)
            lines.append(f"  member {member.client_id} {member.host}: {', '.join(owned) or 'nothing'}")
    except Exception as exc:  # a report must not hide the failure it describes
        lines.append(f"describe failed: {exc!r}")
    try:
        lag = group_lag(settings, group, topics)
        per_partition = ", ".join(f"{row.topic}[{row.partition}] {row.lag}" for row in lag.partitions)
        lines.append(f"lag {lag.total}: {per_partition}")
    except Exception as exc:
        lines.append(f"lag failed: {exc!r}")
    return "\n".join(lines)


def assert_exact(pipeline: Pipeline, job_id: str, status: JobStatus, n: int) -> None:
    """Completed, every task counted once, nothing missing, no errors."""
    assert status.state == "completed", (status.state, status.reason)
    assert (status.total_tasks, status.done, status.errors) == (n, n, 0)
    records = pipeline.client.results(job_id)
    indices = [record.example_index for record in records]
    assert sorted(indices) == list(range(n)), f"{len(indices)} results, {len(set(indices))} distinct"
    assert not [record for record in records if record.error is not None]


def topic_bytes(settings: KafkaSettings, topics: Sequence[str], timeout: float = 10.0) -> Iterator[bytes]:
    """Every key, value and header value of ``topics``, all partitions from their beginning to their end."""
    consumer = Consumer({**settings.confluent(), "group.id": "resilience-scan", "enable.auto.commit": False})
    try:
        for topic in topics:
            yield from _topic_bytes(consumer, topic, timeout)
    finally:
        consumer.close()


def _topic_bytes(consumer: Consumer, topic: str, timeout: float) -> Iterator[bytes]:
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    ends = {p: _end(consumer, topic, p, timeout) for p in partitions}
    wanted = {p for p, end in ends.items() if end > 0}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(wanted)])
    deadline = time.monotonic() + timeout
    while wanted:
        messages = consumer.consume(1000, 0.2)  # it waits its whole timeout unless the batch fills
        assert messages or time.monotonic() < deadline, f"reading {topic} stalled: {sorted(wanted)} unread"
        for message in messages:
            if message.error() is not None:
                continue
            yield message.key() or b""
            yield message.value() or b""
            for _, value in message.headers() or []:
                yield value or b""
            if (message.offset() or 0) + 1 >= ends[message.partition() or 0]:
                wanted.discard(message.partition() or 0)
    consumer.unassign()


def _end(consumer: Consumer, topic: str, partition: int, timeout: float) -> int:
    return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)[1])


class CountingListener:
    """A tiny HTTP server in a thread that answers 500 to everything and counts what reached it."""

    def __init__(self) -> None:
        self.requests = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.json_response({"error": {"message": "nothing should reach this listener"}}, status=500)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __enter__(self) -> CountingListener:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextmanager
def pipeline_of(bootstrap: str, prefix: str, work_dir: Path, **kwargs: Any) -> Iterator[Pipeline]:
    pipeline = Pipeline(bootstrap, prefix, work_dir, **kwargs)
    try:
        yield pipeline
    finally:
        pipeline.close()
