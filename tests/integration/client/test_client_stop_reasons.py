"""Every stop reason from the real aggregator to the client: what the client returns or raises.

A real aggregator process decides each job's end on the session's broker; the test plays the
predictors and scorer (:class:`client_kafka.FakePipeline`, its statuses left to the aggregator),
so each case controls exactly which examples fail, how, and what they cost.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from client_kafka import FakePipeline, Outcome
from confluent_kafka import Producer

import dspex
from dspex.client import Client
from dspex.errors import JobError, KafkaError, LMAuthenticationError
from dspex.evaluate import Evaluate
from dspex.primitives import Example
from dspex.schemas import ErrorInfo, JobStatus, Task
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry
from dspex.testing import arithmetic_dataset

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

N = 20
PROGRAM = dspex.Predict("question -> answer")
KEY_REFUSED = "Incorrect API key provided: sk-...xyz"


class ScoringOnly(FakePipeline):
    """The predictors and scorer; the job's statuses are the real aggregator's."""

    def _status(self, *args: Any) -> None:
        return None


@pytest.fixture
def aggregator(kafka_bootstrap: str, registry: TopicRegistry, tmp_path: Path) -> Iterator[None]:
    log = tmp_path / "aggregator.log"
    command = [sys.executable, "-m", "dspex.processors.aggregator", "--bootstrap", kafka_bootstrap,
               "--prefix", registry.prefix, "--data-dir", str(tmp_path / "faust"), "--fast-groups",
               "--no-metrics", "--worker-id", "agg-stop"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        yield
    finally:
        process.kill()
        process.wait()
    if process.returncode not in (0, -9):
        pytest.fail(f"the aggregator exited {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")


async def evaluate_through(client: Client, pipeline: FakePipeline, **limits: Any) -> Any:
    pipeline.start(expected_tasks=N)
    try:
        return await client.aevaluate(PROGRAM, arithmetic_dataset(N, seed=3), "exact_match:answer",
                                      display_progress=False, timeout=120, **limits)  # fmt: skip
    finally:
        await asyncio.to_thread(pipeline.join)


def refused(task: Task) -> Outcome:
    """Every example fails on a 401, the way a predictor records it."""
    error = ErrorInfo(type="LMAuthenticationError", message=KEY_REFUSED, status=401, systemic=True)
    return Outcome(score=0.0, error=error)


def flaky(task: Task) -> Outcome:
    """Every third example fails with a 503 (not systemic); the others are right."""
    if task.example_index % 3 == 0:
        return Outcome(score=0.0, error=ErrorInfo(type="LMServerError", message="503", status=503))
    return Outcome(score=1.0, outputs={"answer": task.example["answer"]})


def local_error_for_a_refused_key() -> BaseException:
    def program(**inputs: Any) -> Any:
        raise LMAuthenticationError(KEY_REFUSED, status=401)

    with pytest.raises(LMAuthenticationError) as raised:
        Evaluate(devset=arithmetic_dataset(N, seed=3), metric=lambda *a: 1.0, max_errors=10)(program)
    return raised.value


async def test_a_refused_key_with_max_errors_set_raises_as_local_evaluate_does(
    client: Client, settings: KafkaSettings, registry: TopicRegistry, aggregator: None
) -> None:
    pipeline = ScoringOnly(settings, registry, refused)
    with pytest.raises(LMAuthenticationError) as raised:
        await evaluate_through(client, pipeline, max_errors=10)
    error = raised.value
    local = local_error_for_a_refused_key()
    assert isinstance(error, type(local)) and type(error).__name__ == type(local).__name__
    assert str(error) == str(local) == KEY_REFUSED
    assert isinstance(error, JobError) and error.state == "failed" and error.status == 401
    status = await client.astatus(error.job_id)
    # systemic whatever the count the aggregator had when it decided (batches arrive as they come)
    assert isinstance(status, JobStatus) and status.stop_reason == "systemic" and status.errors >= 1


async def test_more_failures_than_max_errors_give_partial_results(
    client: Client, settings: KafkaSettings, registry: TopicRegistry, aggregator: None
) -> None:
    result = await evaluate_through(client, ScoringOnly(settings, registry, flaky), max_errors=2)
    assert result.stopped_early and result.errors >= 3
    [job_id] = await client.ajobs()
    assert (await client.astatus(job_id)).stop_reason == "max_errors"


async def test_a_cost_over_max_cost_gives_partial_results(
    client: Client, settings: KafkaSettings, registry: TopicRegistry, aggregator: None
) -> None:
    # every example costs $0.001 (FakePipeline's usage): $0.0105 is crossed at the 11th
    result = await evaluate_through(client, ScoringOnly(settings, registry, flaky), max_cost_usd=0.0105)
    assert result.stopped_early
    [job_id] = await client.ajobs()
    status = await client.astatus(job_id)
    assert status.stop_reason == "max_cost" and status.usage.cost_usd > 0.0105


async def test_a_cancelled_job_raises_and_says_cancelled(client: Client, aggregator: None) -> None:
    job_id = await client.aevaluate(PROGRAM, arithmetic_dataset(N), "exact_match:answer", wait=False)
    assert isinstance(job_id, str)
    await client.acancel(job_id, "enough")
    final = await client.await_job(job_id, timeout=120)
    assert (final.state, final.stop_reason, final.reason) == ("cancelled", "cancelled", "enough")
    with pytest.raises(JobError, match="cancelled: enough"):
        await client.acollect(job_id)


async def test_tasks_the_client_could_not_publish_fail_the_job_as_tasks_missing(
    client: Client, aggregator: None
) -> None:
    devset = arithmetic_dataset(3)
    # 70 inputs of 250 kB: each under the blobs threshold, so all inline, together over the 16 MiB
    # a record may have: this task cannot be produced, the first two were
    fields = {f"note{i}": "x" * 250_000 for i in range(70)}
    devset[2] = Example(question="What is 1 + 1?", answer="2", **fields).with_inputs("question", *fields)
    with pytest.raises(KafkaError) as raised:
        await client.aevaluate(PROGRAM, devset, "exact_match:answer", display_progress=False)
    [note] = [note for note in raised.value.__notes__ if "stop_reason tasks_missing" in note]
    job_id = note.split()[1]  # "job <id> was failed (stop_reason tasks_missing): ..."
    final = await client.await_job(job_id, timeout=120)
    assert (final.state, final.stop_reason) == ("failed", "tasks_missing")
    with pytest.raises(JobError, match="could not publish every task"):
        await client.acollect(job_id)


async def test_a_job_record_that_does_not_decode_fails_as_invalid_submit(
    client: Client, settings: KafkaSettings, registry: TopicRegistry, aggregator: None
) -> None:
    # what a client in another language might write: num_examples is a string
    value = (
        b'{"schema_version":"1.0","kind":"eval","job_id":"job-bad","candidate_ids":["c"],"num_examples":"20"}'
    )
    producer = Producer(settings.confluent())
    producer.produce(registry.name("jobs"), value, key=b"job-bad")
    assert producer.flush(30) == 0
    final = await client.await_job("job-bad", timeout=120)
    assert (final.state, final.stop_reason, final.total_tasks) == ("failed", "invalid_submit", 0)
    assert "num_examples" in (final.reason or "")
    with pytest.raises(JobError, match="job job-bad failed: the job's record on the jobs topic is invalid"):
        await client.acollect("job-bad")
