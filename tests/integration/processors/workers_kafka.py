"""Helpers of the worker tests: publish a job with its candidates and tasks, read topics back, run a
worker in a task of the test's event loop, and a tiny HTTP listener that counts what reaches it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from dspex.primitives import Module
from dspex.processors.common import Worker
from dspex.schemas import EvalJob, LMSpec, MetricSpec, ProgramSpec, Task, decode
from dspex.serialization import dump_program
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry


def length_metric(example: Any, prediction: Any, trace: Any = None) -> float:
    """A metric reachable by import path (``workers_kafka:length_metric``): 1.0 for a 1-character answer."""
    return 1.0 if len(str(prediction.answer)) == 1 else 0.0


@dataclass
class PublishedJob:
    job: EvalJob
    tasks: list[Task]


async def publish_candidate(producer: AsyncProducer, registry: TopicRegistry, program: Module) -> str:
    """Publish ``program`` to the candidates topic; returns its candidate id."""
    spec = ProgramSpec.build(dump_program(program))
    await producer.produce_record(registry.name("candidates"), to_record(spec, role="candidates"))
    return spec.candidate_id


async def publish_job(
    producer: AsyncProducer,
    registry: TopicRegistry,
    *,
    job_id: str,
    candidate_ids: Sequence[str],
    rows: Sequence[dict[str, Any]],
    lm: LMSpec | None,
    metric: str = "exact_match:answer",
    metric_kind: str = "builtin",
    failure_score: float = 0.0,
) -> PublishedJob:
    """Publish an EvalJob and one Task per candidate and row (tasks carry ``lm``)."""
    job = EvalJob(
        job_id=job_id,
        candidate_ids=list(candidate_ids),
        metric=MetricSpec(name=metric, kind=metric_kind),  # type: ignore[arg-type]
        lm=lm,
        num_examples=len(rows),
        failure_score=failure_score,
    )
    await producer.produce_record(registry.name("jobs"), to_record(job, role="jobs"))
    tasks = [
        Task.build(
            job_id=job_id, candidate_id=cid, example_index=i, example=row, input_keys=["question"], lm=lm
        )
        for cid in candidate_ids
        for i, row in enumerate(rows)
    ]
    pending = [await producer.send(registry.name("tasks"), **_fields(task, "tasks")) for task in tasks]
    await asyncio.gather(*pending)
    return PublishedJob(job, tasks)


def _fields(model: Any, role: str) -> dict[str, Any]:
    record = to_record(model, role=role)
    return {"value": record.value, "key": record.key, "headers": record.headers}


async def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Re-check ``condition`` every 10 ms; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await asyncio.sleep(0.01)


class Tail:
    """Every record of a topic from its beginning, read without a consumer group."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self.messages: list[Message] = []
        self._consumer = Consumer(
            {**settings.confluent(), "group.id": "tail-unused", "enable.auto.commit": False}
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])

    def _poll(self) -> None:
        self.messages.extend(m for m in self._consumer.consume(1000, 0.2) if m.error() is None)

    async def until(self, done: Callable[[list[Message]], bool], timeout: float, what: str) -> list[Message]:
        """Poll until ``done(messages)``; AssertionError naming ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: {len(self.messages)} records after {timeout} s; {what}")
            await asyncio.to_thread(self._poll)
        return self.messages

    async def count(self, n: int, timeout: float = 60.0) -> list[Message]:
        return await self.until(lambda found: len(found) >= n, timeout, f"wanted {n}")

    def decoded(self, model: Any) -> list[Any]:
        return [decode(m.value(), model) for m in self.messages]

    def close(self) -> None:
        self._consumer.close()


@asynccontextmanager
async def tails(settings: KafkaSettings, registry: TopicRegistry, *roles: str) -> AsyncIterator[list[Tail]]:
    opened = [Tail(settings, registry.name(role)) for role in roles]  # type: ignore[arg-type]
    try:
        yield opened
    finally:
        for tail in opened:
            tail.close()


@asynccontextmanager
async def running(worker: Worker, ready_timeout: float = 30.0) -> AsyncIterator[Worker]:
    """Run ``worker`` in a task until the block ends, then drain and stop it (errors re-raised)."""
    task = asyncio.create_task(worker.run(), name=f"test-{worker.kind}")
    ready = asyncio.create_task(worker.wait_ready(ready_timeout))
    try:
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()  # the worker failed while starting: show why
            raise AssertionError(f"the {worker.kind} worker stopped before it was ready")
        await ready
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)


class CountingListener:
    """A real HTTP server on loopback that answers 500 to everything and counts the requests."""

    def __init__(self) -> None:
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _any(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(status=500, text="this listener must never be called")

    async def __aenter__(self) -> CountingListener:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"
