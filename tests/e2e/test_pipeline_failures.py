"""Jobs that go wrong on the shared pipeline: a corrupted task, an LM that answers 401, a cancel.

- A task whose value is garbage on the tasks topic is dead-lettered with its original bytes,
  accounted to its job as an error, and the job completes; the LM never sees that task.
- A job against an LM that refuses the key fails as a whole within seconds, with the provider's
  message in the JobError the client raises.
- A cancelled job stops consuming LM calls: the request counter settles far below the tasks left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from e2e_pipeline import METRIC, Pipeline, cot_program, devset, local_evaluate, read_topic, sim_lm, wait_quiet
from pydantic import BaseModel

from dspex.client._submit import Limits, Policy, build_submission
from dspex.errors import JobError
from dspex.lm import LM
from dspex.schemas import DLQ_REASON_UNDECODABLE, DeadLetter, decode
from dspex.settings import context
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRole
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SimFactory = Callable[..., SimulatedLMServer]
GARBAGE = b"\xff\x00 not a task {"


def publish_with_a_corrupt_task(pipeline: Pipeline, n: int, corrupt: int, lm: LM) -> tuple[str, str]:
    """Publish a job of ``n`` examples as the client would, except that the task of example
    ``corrupt`` goes out as garbage bytes under that task's own key and headers.

    Returns the job id and the corrupt task's id.
    """
    with context(lm=lm):
        submission = build_submission([cot_program()], devset(n), METRIC, policy=Policy(), limits=Limits())
    producer = Producer(pipeline.settings.confluent())

    def send(role: TopicRole, model: BaseModel, value: bytes | None = None) -> None:
        record = to_record(model, role=role)
        headers: list[tuple[str, str | bytes | None]] = list(record.headers)
        topic = pipeline.registry.name(role)
        producer.produce(topic, record.value if value is None else value, record.key, headers=headers)

    for spec in submission.specs:
        send("candidates", spec)
    send("jobs", submission.job)
    producer.flush(30)  # the program and the job before any task, as the client does
    task_id = ""
    for task in submission.tasks():
        if task.example_index == corrupt:
            send("tasks", task, GARBAGE)
            task_id = task.task_id
        else:
            send("tasks", task)
    assert producer.flush(30) == 0
    return submission.job.job_id, task_id


def test_a_corrupted_task_is_dead_lettered_and_accounted_to_its_job(
    shared_pipeline: Pipeline, sim_factory: SimFactory, cache_dir: Path
) -> None:
    n, corrupt = 60, 17
    sim = sim_factory(latency=0.005)
    lm = sim_lm(sim, cache_dir)
    job_id, task_id = publish_with_a_corrupt_task(shared_pipeline, n, corrupt, lm)

    status = shared_pipeline.finish(job_id)
    assert (status.state, status.total_tasks, status.done, status.errors) == ("completed", n, n, 1)
    [result] = shared_pipeline.client.collect(job_id)
    assert (result.total, result.processed, result.errors) == (n, n, 1)
    assert list(result.error_messages) == [corrupt]
    assert "dead-lettered by the predict worker (undecodable)" in result.error_messages[corrupt]
    records = shared_pipeline.client.results(job_id)
    assert [r.example_index for r in records] == list(range(n))
    assert [r.source for r in records if r.error is not None] == ["dlq"]

    # the DLQ holds the original bytes, key and headers, and names the job, candidate and example
    letters = [
        letter
        for message in read_topic(shared_pipeline.settings, shared_pipeline.registry.name("dlq"))
        if (letter := decode(message.value(), DeadLetter)).job_id == job_id
    ]
    assert len(letters) == 1, letters
    letter = letters[0]
    assert letter.value_bytes() == GARBAGE
    assert letter.key_bytes() == task_id.encode()
    assert (letter.original_topic, letter.reason) == (
        shared_pipeline.registry.name("tasks"),
        DLQ_REASON_UNDECODABLE,
    )
    assert (letter.candidate_id, letter.example_index) == (records[corrupt].candidate_id, corrupt)

    # the other examples scored as local Evaluate scores them; the LM never saw the corrupt task
    local = local_evaluate(cot_program(), devset(n), lm)
    expected = [record.score for record in local.records]
    expected[corrupt] = 0.0
    assert [record.score for record in result.records] == expected
    stats = sim.control.stats()
    assert stats["completions_ok"] == stats["requests_total"] == (n - 1) + n
    shared_pipeline.wait_drained()


def test_a_job_against_an_lm_refusing_the_key_fails_at_once_with_the_providers_message(
    shared_pipeline: Pipeline, sim_factory: SimFactory, cache_dir: Path
) -> None:
    n = 4000
    sim = sim_factory(latency=0.005, require_api_key="sk-e2e-only-the-sim-knows")
    lm = sim_lm(sim, cache_dir, api_key_env="DSPEX_E2E_ABSENT_KEY")  # not in the workers' environment
    started = time.monotonic()
    with pytest.raises(JobError) as raised:
        shared_pipeline.evaluate([cot_program()], devset(n), lm, name="refused-key")
    elapsed = time.monotonic() - started

    error = raised.value
    assert error.state == "failed"
    assert "You didn't provide an API key" in str(error)
    assert error.reason is not None and "You didn't provide an API key" in error.reason
    assert elapsed < 20.0, f"the job took {elapsed:.1f} s to fail"
    status = shared_pipeline.status(error.job_id)
    assert status is not None and status.state == "failed" and status.done < n

    stats = wait_quiet(sim)
    assert stats["completions_ok"] == 0
    refused = stats["by_status"].get("401", 0)
    assert refused >= 1 and stats["requests_total"] == refused
    # Tasks already past the predictors' "is the job stopped?" check still call the LM (see the
    # report): what is asserted is that the job stopped early, not that it stopped at the first 401.
    assert refused < n // 2, f"{refused} requests for {n} tasks: the job did not stop early"
    shared_pipeline.wait_drained()
    assert sim.control.stats()["requests_total"] == refused  # skipped, not run: nothing more reached it


def test_a_cancelled_job_stops_consuming_lm_calls(
    shared_pipeline: Pipeline, sim_factory: SimFactory, cache_dir: Path
) -> None:
    n = 4000
    sim = sim_factory(latency=0.05)
    job_id = shared_pipeline.submit([cot_program()], devset(n), sim_lm(sim, cache_dir), name="to-cancel")
    sim.control.wait_until(lambda stats: stats["completions_ok"] >= 100, timeout=120)

    shared_pipeline.client.cancel(job_id, "enough")
    at_cancel = sim.control.stats()["requests_total"] + sim.control.stats()["in_flight"]
    status = shared_pipeline.finish(job_id)
    assert (status.state, status.reason) == ("cancelled", "enough")
    with pytest.raises(JobError, match="cancelled"):
        shared_pipeline.client.collect(job_id)

    settled = wait_quiet(sim)["requests_total"]
    remaining = n - at_cancel
    # Tasks already past the predictors' cancellation check still call the LM: up to each
    # predictor's --concurrency (256) of them, most waiting for the LM limiter (see the report).
    assert settled - at_cancel < remaining // 3, (
        f"{settled - at_cancel} LM requests after the cancel, with {remaining} tasks left"
    )
    shared_pipeline.wait_drained()  # every task was consumed: the rest were skipped, not run
    final = sim.control.stats()
    assert final["requests_total"] == settled and final["completions_ok"] == settled
