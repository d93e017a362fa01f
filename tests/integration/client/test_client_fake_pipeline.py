"""The client's follow / read / EvaluationResult path end to end, with the test playing the workers.

No worker exists in this phase, so :class:`FakePipeline` (plain confluent-kafka clients on the real
broker) consumes the job's tasks and writes score records and statuses as the predictor, scorer
and aggregator will. The client under test is unaware: it follows the status and reads the scores.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from client_kafka import FakePipeline, Outcome

import dspex
from dspex.client import Client
from dspex.errors import JobError
from dspex.evaluate import EvaluationResult
from dspex.schemas import ErrorInfo, JobStatus, ScoreRecord, Task
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry
from dspex.testing import arithmetic_dataset

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

N = 20
PLAIN = dspex.Predict("question -> answer")
COT = dspex.ChainOfThought("question -> answer")


def decide(task: Task) -> Outcome:
    """PLAIN is right on 2 of 3 examples; COT on all but example 5, whose prediction failed."""
    right = task.example["answer"]
    if task.candidate_id == dspex.candidate_id(COT):
        if task.example_index == 5:
            return Outcome(score=0.0, error=ErrorInfo(type="LMServerError", message="boom", status=500))
        return Outcome(score=1.0, outputs={"reasoning": "r", "answer": right})
    ok = task.example_index % 3 != 0
    return Outcome(score=float(ok), outputs={"answer": right if ok else "wrong"})


def expected_score(candidate: dspex.Module) -> float:
    tasks = [Task.build(job_id="j", candidate_id=dspex.candidate_id(candidate), example_index=i,
                        example={"answer": "1"}, input_keys=["question"]) for i in range(N)]  # fmt: skip
    return 100.0 * math.fsum(decide(t).score for t in tasks) / N


async def run_with_pipeline(client: Client, pipeline: FakePipeline, tasks: int, **options: Any) -> Any:
    pipeline.start(expected_tasks=tasks)
    try:
        return await client.aevaluate_many([PLAIN, COT], arithmetic_dataset(N, seed=7), "exact_match:answer",
                                           display_progress=False, **options)  # fmt: skip
    finally:
        await asyncio.to_thread(pipeline.join)


async def finished_job(client: Client, pipeline: FakePipeline) -> str:
    """Evaluate PLAIN and COT through ``pipeline``; the id of the completed job."""
    await run_with_pipeline(client, pipeline, 2 * N, timeout=60)
    return pipeline.tasks[0].job_id


async def test_evaluate_many_returns_what_local_evaluate_would(
    client: Client, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    devset = arithmetic_dataset(N, seed=7)
    pipeline = FakePipeline(settings, registry, decide)
    results = await run_with_pipeline(client, pipeline, 2 * N, timeout=60)
    assert isinstance(results, list) and len(results) == 2
    plain, cot = results
    assert isinstance(plain, EvaluationResult) and isinstance(cot, EvaluationResult)

    assert plain.score == pytest.approx(expected_score(PLAIN)) and plain.errors == 0
    assert cot.score == pytest.approx(95.0) and cot.errors == 1
    for result in results:
        assert [ex for ex, _, _ in result.results] == devset  # example order, the devset's own objects
        assert (result.total, result.processed, result.stopped_early) == (N, N, False)
        assert result.metric == "exact_match:answer"
        assert result.usage.lm_calls == N and result.usage.prompt_tokens == 10 * N
    # the duplicate of the first record (score flipped) did not win
    first = next(
        t for t in pipeline.tasks if t.example_index == 0 and t.candidate_id == dspex.candidate_id(PLAIN)
    )
    assert plain.results[0][2] == decide(first).score == 0.0
    # predictions carry the outputs and their usage; a failed one is an empty Prediction (as DSPy's
    # results have it), None in its record, with its error kept
    assert plain.results[1][1] is not None and plain.results[1][1].answer == devset[1].answer
    assert plain.results[1][1].usage.lm_calls == 1
    assert cot.results[5][1] == dspex.Prediction() and cot.records[5].prediction is None
    assert cot.error_messages == {5: "LMServerError: boom"}


async def test_results_written_to_another_partition_than_the_jobs_are_still_found(
    client: Client, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    # The client reads a job's scores from its key's partition while the job runs; records that
    # a differently-partitioning writer put elsewhere are found by scanning once the job is done.
    pipeline = FakePipeline(settings, registry, decide)
    pipeline.scores_elsewhere = True
    results = await run_with_pipeline(client, pipeline, 2 * N, timeout=60)
    assert [r.score for r in results] == pytest.approx([expected_score(PLAIN), 95.0])
    assert all(r.processed == N for r in results)


async def test_a_fresh_client_reads_status_and_deduplicated_results(
    client: Client, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    job_id = await finished_job(client, FakePipeline(settings, registry, decide))
    async with Client(kafka=settings, prefix=registry.prefix) as other:
        status = await other.astatus(job_id)
        records = await other.aresults(job_id)
        jobs = await other.ajobs()
        collected = await other.acollect(job_id)
    assert isinstance(status, JobStatus) and status.state == "completed" and status.done == 2 * N
    assert len(records) == 2 * N  # the duplicate is gone
    assert [(r.candidate_id, r.example_index) for r in records] == sorted(
        ((r.candidate_id, r.example_index) for r in records),
        key=lambda pair: ([c.candidate_id for c in status.candidates].index(pair[0]), pair[1]),
    )
    assert job_id in jobs and jobs[job_id].state == "completed"
    assert sorted(r.score for r in collected) == sorted([expected_score(PLAIN), 95.0])
    assert await other_status_is_none(settings, registry)


def _identity(record: ScoreRecord) -> tuple[str, int, float]:
    return record.candidate_id, record.example_index, record.score


async def test_iter_results_streams_what_results_returns_without_the_duplicate(
    client: Client, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    job_id = await finished_job(client, FakePipeline(settings, registry, decide))
    async with Client(kafka=settings, prefix=registry.prefix) as other:
        streamed = [record async for record in other.aiter_results(job_id)]
        listed = await other.aresults(job_id)
    assert len(streamed) == 2 * N  # the redelivered first task's second score is gone
    assert sorted(map(_identity, streamed)) == sorted(map(_identity, listed))
    # the sync form, from a thread of its own; stopping early closes the reader, a second pass
    # starts over
    first_three, everything = await asyncio.to_thread(_read_sync, settings, registry, job_id)
    assert first_three == list(map(_identity, streamed[:3]))
    assert everything == list(map(_identity, streamed))


def _read_sync(
    settings: KafkaSettings, registry: TopicRegistry, job_id: str
) -> tuple[list[tuple[str, int, float]], list[tuple[str, int, float]]]:
    with Client(kafka=settings, prefix=registry.prefix) as sync_client:
        first_three = []
        for record in sync_client.iter_results(job_id):
            first_three.append(_identity(record))
            if len(first_three) == 3:
                break
        return first_three, list(map(_identity, sync_client.iter_results(job_id)))


async def test_iter_results_finds_records_another_writer_put_on_other_partitions(
    client: Client, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    pipeline = FakePipeline(settings, registry, decide)
    pipeline.scores_elsewhere = True
    job_id = await finished_job(client, pipeline)
    async with Client(kafka=settings, prefix=registry.prefix) as other:
        streamed = [record async for record in other.aiter_results(job_id)]
    assert sorted((r.candidate_id, r.example_index) for r in streamed) == sorted(
        (t.candidate_id, t.example_index) for t in pipeline.tasks
    )


async def test_iter_results_of_an_unknown_job_raises_naming_it(
    client: Client, registry: TopicRegistry
) -> None:
    with pytest.raises(JobError, match=f"no status of job no-such-job on {registry.name('status')}"):
        async for _ in client.aiter_results("no-such-job"):
            pass


async def other_status_is_none(settings: KafkaSettings, registry: TopicRegistry) -> bool:
    async with Client(kafka=settings, prefix=registry.prefix) as other:
        return await other.astatus("no-such-job") is None


async def test_a_job_failed_by_a_systemic_error_raises_with_the_providers_message(
    client: Client, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    pipeline = FakePipeline(settings, registry, decide)
    pipeline.final_state, pipeline.reason = "failed", "LMAuthenticationError: 401 invalid api key"
    with pytest.raises(JobError, match="invalid api key") as caught:
        await run_with_pipeline(client, pipeline, 2 * N, timeout=60)
    assert (caught.value.state, caught.value.job_id) == ("failed", pipeline.tasks[0].job_id)


async def test_a_job_stopped_at_max_errors_gives_partial_results_marked_stopped_early(
    client: Client, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    pipeline = FakePipeline(settings, registry, decide)
    pipeline.final_state, pipeline.reason = "failed", "more than 0 errors"
    results = await run_with_pipeline(client, pipeline, 2 * N, timeout=60, max_errors=0)
    assert isinstance(results, list)
    assert all(r.stopped_early for r in results)
    assert results[1].score == pytest.approx(95.0)


async def test_wait_false_then_wait_and_collect(
    client: Client, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    pipeline = FakePipeline(settings, registry, decide)
    pipeline.start(expected_tasks=N)
    job_id = await client.aevaluate(PLAIN, arithmetic_dataset(N, seed=7), "exact_match:answer", wait=False)
    assert isinstance(job_id, str)
    final = await client.await_job(job_id, timeout=60, display_progress=True)  # the bar must not break it
    await asyncio.to_thread(pipeline.join)
    assert final.state == "completed"
    [result] = await client.acollect(job_id)
    assert result.score == pytest.approx(expected_score(PLAIN))


async def test_timeout_raises_job_error_and_the_job_keeps_running(client: Client) -> None:
    started = time.monotonic()
    with pytest.raises(JobError, match="did not finish within 1") as caught:
        await client.aevaluate(PLAIN, arithmetic_dataset(3), "exact_match:answer", timeout=1,
                               display_progress=False)  # fmt: skip
    assert caught.value.state is None  # no status was ever written: no workers
    assert time.monotonic() - started < 10
