"""Jobs that go wrong on the shared pipeline: a corrupted task, an LM that answers 401, a cancel.

- A task whose value is garbage on the tasks topic is dead-lettered with its original bytes,
  accounted to its job as an error, and the job completes; the LM never sees that task.
- A job record whose value is garbage on the jobs topic is dead-lettered with its reason, like any
  other topic's poison, and its job fails (``invalid_submit``) instead of never getting a status.
- A job against an LM that refuses the key fails as a whole within seconds, with the provider's
  message in the JobError the client raises.
- A cancelled job stops consuming LM calls: requests in flight at the simulated LM (held there) are
  dropped by the predictors as soon as they read the cancellation, and no new request follows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from e2e_pipeline import (
    METRIC,
    Pipeline,
    cot_program,
    devset,
    local_evaluate,
    read_topic,
    sim_lm,
    sim_report,
    wait_for,
    wait_quiet,
)
from pydantic import BaseModel

from dspex.client._submit import Limits, Policy, build_submission
from dspex.configuration import context
from dspex.errors import JobError
from dspex.lm import LM
from dspex.schemas import DLQ_REASON_UNDECODABLE, DeadLetter, decode
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


def test_a_corrupted_job_record_is_dead_lettered_and_fails_its_job(
    shared_pipeline: Pipeline, sim_factory: SimFactory, cache_dir: Path
) -> None:
    with context(lm=sim_lm(sim_factory(latency=0.005), cache_dir)):
        submission = build_submission([cot_program()], devset(3), METRIC, policy=Policy(), limits=Limits())
    job_id = submission.job.job_id
    record = to_record(submission.job, role="jobs")
    producer = Producer(shared_pipeline.settings.confluent())
    headers: list[tuple[str, str | bytes | None]] = list(record.headers)
    producer.produce(shared_pipeline.registry.name("jobs"), GARBAGE, record.key, headers=headers)
    assert producer.flush(30) == 0

    status = shared_pipeline.finish(job_id)
    assert (status.state, status.stop_reason) == ("failed", "invalid_submit")
    letters = wait_for(
        lambda: [
            letter
            for message in read_topic(shared_pipeline.settings, shared_pipeline.registry.name("dlq"))
            if (letter := decode(message.value(), DeadLetter)).key_bytes() == job_id.encode()
        ],
        30,
        "the job record's dead letter",
    )
    # all of them the one record (at-least-once: a record read again after a rebalance may be
    # dead-lettered again, and each group reading the jobs topic writes its own)
    assert len({(letter.partition, letter.offset) for letter in letters}) == 1, letters
    for letter in letters:
        assert (letter.original_topic, letter.reason) == (
            shared_pipeline.registry.name("jobs"),
            DLQ_REASON_UNDECODABLE,
        )
        assert letter.value_bytes() == GARBAGE


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
    # From here every LM request waits at the simulated LM: the predictors' LM slots fill with held
    # requests, which only the cancellation can end.
    sim.control.hold()
    at_cancel = wait_saturated(sim)
    shared_pipeline.client.cancel(job_id, "enough")
    status = shared_pipeline.finish(job_id)
    assert (status.state, status.reason) == ("cancelled", "enough")
    with pytest.raises(JobError, match="cancelled"):
        shared_pipeline.client.collect(job_id)

    # Each predictor drops its in-flight LM requests as soon as it reads the cancellation, and sends
    # no new one: nothing stays held, and the counter stops.
    stopped = wait_quiet(sim)
    assert stopped["held"] == 0, f"LM requests still held after the cancel: {sim_report(sim)}"
    sim.control.release()
    shared_pipeline.wait_drained()  # every task was consumed: the rest were skipped, not run
    final = wait_quiet(sim)
    assert final["completions_ok"] == stopped["completions_ok"], "an LM answer after the cancel"
    assert final["requests_total"] == stopped["requests_total"], "an LM request after the cancel"
    # A new request needs a free LM slot, and the predictors' slots were all taken by held requests
    # when the job was cancelled: a slot frees only when the cancellation ends its request.
    after_cancel = stopped["requests_total"] - (at_cancel["requests_total"] + at_cancel["in_flight"])
    assert after_cancel <= 3, f"{after_cancel} LM requests started after the cancel"
    # Stopped before its end. (How many answers came before the hold took effect depends on the
    # machine's speed: 1,024 requests in flight per predictor answer fast at 50 ms.)
    assert stopped["completions_ok"] < n, "the job did not stop early"


def wait_saturated(sim: SimulatedLMServer) -> dict[str, Any]:
    """Until the held requests stop growing (two samples 1 s apart agree): the predictors' LM slots
    are full. Returns the stats then."""
    previous = [-1]

    def full() -> dict[str, Any] | None:
        stats = sim.control.stats()
        held = int(stats["held"])
        settled = held > 0 and held == previous[0]
        previous[0] = held
        return stats if settled else None

    return wait_for(full, 120, "the held LM requests to stop growing", poll=1.0)
