"""The predictor worker against the real broker and the simulated LM: one prediction per task with the
LM's own usage, dead letters accounted to their job, refused LMs never called, 401 as systemic."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from workers_kafka import CountingListener, publish_candidate, publish_job, running, tails, wait_until

import dspex
from dspex.processors.common import WorkerOptions
from dspex.processors.predictor import DEADLINE_ERROR, Predictor
from dspex.processors.security import SecurityPolicy
from dspex.schemas import (
    Cancel,
    DeadLetter,
    JobStatus,
    LMSpec,
    PredictionRecord,
    ProgramSpec,
    ScoreRecord,
    Task,
    WorkerHeartbeat,
)
from dspex.schemas.base import utc_now
from dspex.serialization import dump_program
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry
from dspex.testing import SimulatedLMServer, arithmetic_rows

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def options(registry: TopicRegistry, **changes: object) -> WorkerOptions:
    # These tests read the predictions: built-in metrics are not scored inline here (test_inline_scores)
    base: dict[str, object] = {
        "prefix": registry.prefix, "fast_groups": True, "metrics": False, "inline_builtin_metrics": False,
    }  # fmt: skip
    return WorkerOptions(**{**base, **changes})  # type: ignore[arg-type]


def sim_lm(base_url: str, **fields: object) -> LMSpec:
    return LMSpec(model="openai/simulated", api_base=base_url, cache=False, **fields)  # type: ignore[arg-type]


async def test_every_task_answered_once_with_the_lms_usage(
    settings: KafkaSettings, registry: TopicRegistry, tmp_path: Path
) -> None:
    rows = arithmetic_rows(300, seed=3)
    worker = Predictor(settings, options(registry, metrics=True, targets_dir=tmp_path, worker_id="pred-1"))
    with SimulatedLMServer(in_process=True) as sim:
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions", "workers") as (
                predictions,
                workers,
            ),
        ):
            cid = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            published = await publish_job(
                producer, registry, job_id="job-ok", candidate_ids=[cid], rows=rows, lm=sim_lm(sim.base_url)
            )
            async with running(worker):
                await predictions.count(len(rows))
                await workers.count(1)
                target = json.loads((tmp_path / "pred-1.json").read_text())
                with urllib.request.urlopen(worker.metrics_server.url, timeout=5) as answer:  # type: ignore[union-attr]
                    exposition = answer.read().decode()
            stats = sim.control.stats()
        committed = KafkaAdmin(settings).committed(
            registry.prefix + "predict", [(registry.name("tasks"), p) for p in range(8)]
        )

    records: list[PredictionRecord] = predictions.decoded(PredictionRecord)
    assert Counter(r.task_id for r in records) == Counter(t.task_id for t in published.tasks)
    assert all(r.error is None and r.outputs is not None and "answer" in r.outputs for r in records)
    assert all(r.usage.lm_calls == 1 and r.usage.cache_hits == 0 for r in records)
    assert all(len(r.trace) == 1 and r.trace[0].outputs == r.outputs for r in records)
    assert stats["completions_ok"] == len(rows)
    assert sum(r.usage.prompt_tokens for r in records) == stats["prompt_tokens"]
    assert sum(r.usage.completion_tokens for r in records) == stats["completion_tokens"]
    assert {r.example_index: r.example for r in records} == dict(enumerate(rows))
    assert sum(committed.values()) == len(rows), "every task's offset committed after its prediction"

    beat = workers.decoded(WorkerHeartbeat)[0]
    assert (beat.worker_id, beat.kind, beat.breaker_state) == ("pred-1", "predict", "closed")
    assert beat.limit == 1024  # the default concurrency: no LM limiter yet when the first beat went out
    assert beat.metrics_url is not None and beat.metrics_url.startswith("http://127.0.0.1:94")
    labels = {"prefix": registry.prefix, "kind": "predict", "worker_id": "pred-1", "__param_worker": "pred-1"}
    assert target[0]["labels"] == labels
    assert 'dspex_messages_produced_total{kind="predict"' in exposition
    assert not (tmp_path / "pred-1.json").exists(), "the discovery file is removed on stop"


async def test_unknown_candidate_and_corrupt_task_are_dead_lettered_and_accounted(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(4, seed=5)
    worker = Predictor(settings, options(registry, candidate_wait_s=1.0))
    with SimulatedLMServer(in_process=True) as sim:
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions", "dlq", "scores") as (predictions, dlq, scores),
        ):
            cid = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            published = await publish_job(
                producer, registry, job_id="job-dlq", candidate_ids=[cid, "never-published"], rows=rows,
                lm=sim_lm(sim.base_url), failure_score=0.25,
            )  # fmt: skip
            corrupt = next(t for t in published.tasks if t.candidate_id == cid and t.example_index == 2)
            headers = [
                ("dspex-job-id", b"job-dlq"),
                ("dspex-candidate-id", cid.encode()),
                ("dspex-example-index", b"2"),
            ]
            await producer.produce(
                registry.name("tasks"), b'{"task_id": "cut', key=corrupt.task_id, headers=headers
            )
            async with running(worker):
                # 4 unknown-candidate tasks and the corrupt copy of task 2 go to the DLQ; 4 good ones run
                await dlq.count(5)
                await scores.count(5)
                await predictions.count(4)

    letters: list[DeadLetter] = dlq.decoded(DeadLetter)
    assert Counter(letter.reason for letter in letters) == {"unknown_candidate": 4, "undecodable": 1}
    accounted: list[ScoreRecord] = scores.decoded(ScoreRecord)
    assert {(s.candidate_id, s.example_index) for s in accounted} == {
        *(("never-published", i) for i in range(4)),
        (cid, 2),
    }
    assert all(s.source == "dlq" and s.job_id == "job-dlq" and s.score == 0.25 for s in accounted)
    assert all(s.error is not None and not s.error.systemic for s in accounted)
    assert len(predictions.decoded(PredictionRecord)) == 4


async def test_lms_outside_the_allowed_api_bases_are_never_called(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(3, seed=7)
    async with (
        CountingListener() as listener,
        AsyncProducer(settings) as producer,
        tails(settings, registry, "dlq", "scores", "predictions") as (dlq, scores, predictions),
    ):
        policy = SecurityPolicy(allow_api_bases=["http://127.0.0.1:1/v1"])  # the listener's port is not it
        worker = Predictor(settings, options(registry, policy=policy))
        plain = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
        own_lm = dspex.Predict("question -> answer", lm=dspex.LM("openai/x", api_base=listener.base_url))
        with_lm = await publish_candidate(producer, registry, own_lm)
        await publish_job(
            producer,
            registry,
            job_id="job-lm",
            candidate_ids=[plain],
            rows=rows,
            lm=sim_lm(listener.base_url),
        )
        await publish_job(producer, registry, job_id="job-prog", candidate_ids=[with_lm], rows=rows, lm=None)
        async with running(worker):
            await dlq.count(2 * len(rows))
            await scores.count(2 * len(rows))

    assert listener.requests == 0
    letters: list[DeadLetter] = dlq.decoded(DeadLetter)
    assert {letter.reason for letter in letters} == {"security_policy"}
    assert all(listener.base_url in letter.error for letter in letters)
    accounted: list[ScoreRecord] = scores.decoded(ScoreRecord)
    assert Counter(s.job_id for s in accounted) == {"job-lm": 3, "job-prog": 3}
    assert all(s.error is not None and s.error.systemic for s in accounted)
    assert predictions.messages == []


async def test_a_401_and_an_unbuildable_program_are_systemic_error_predictions(
    settings: KafkaSettings, registry: TopicRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPEX_TEST_WRONG_KEY", "not-the-key")
    rows = arithmetic_rows(5, seed=9)
    worker = Predictor(settings, options(registry))
    with SimulatedLMServer(in_process=True, require_api_key="the-key") as sim:
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions") as (predictions,),
        ):
            cid = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            future = ProgramSpec.build(
                {**dump_program(dspex.Predict("question -> answer")), "dspex_program": 99}
            )
            await producer.produce_record(registry.name("candidates"), to_record(future, role="candidates"))
            lm = sim_lm(sim.base_url, api_key_env="DSPEX_TEST_WRONG_KEY")
            await publish_job(producer, registry, job_id="job-401", candidate_ids=[cid], rows=rows, lm=lm)
            await publish_job(
                producer, registry, job_id="job-new", candidate_ids=[future.candidate_id], rows=rows, lm=lm
            )
            async with running(worker):
                await predictions.count(2 * len(rows))
        stats = sim.control.stats()

    records = predictions.decoded(PredictionRecord)
    assert all(r.outputs is None and r.error is not None and r.error.systemic for r in records)
    errors = {r.job_id: (r.error.type, r.error.status) for r in records if r.error}
    assert errors == {"job-401": ("LMAuthenticationError", 401), "job-new": ("ProgramLoadError", None)}
    assert all("upgrade dspex" in r.error.message for r in records if r.job_id == "job-new" and r.error)
    assert stats["by_status"] == {"401": len(rows)}, "an auth error is not retried"


async def test_tasks_of_cancelled_and_failed_jobs_are_skipped(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(6, seed=15)
    worker = Predictor(settings, options(registry))
    with SimulatedLMServer(in_process=True) as sim:
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions") as (predictions,),
        ):
            cid = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            lm = sim_lm(sim.base_url)
            for job_id in ("job-cancelled", "job-failed", "job-live"):
                await publish_job(producer, registry, job_id=job_id, candidate_ids=[cid], rows=rows, lm=lm)
            await producer.produce_record(
                registry.name("jobs"), to_record(Cancel(job_id="job-cancelled", reason="test"), role="jobs")
            )
            failed = JobStatus(job_id="job-failed", state="failed", total_tasks=len(rows), reason="test")
            await producer.produce_record(registry.name("status"), to_record(failed, role="status"))
            async with running(worker):
                await wait_until(lambda: worker.runtime is not None and worker.runtime.stats.handled == 18)
                await predictions.count(len(rows))
        stats = sim.control.stats()

    assert {r.job_id for r in predictions.decoded(PredictionRecord)} == {"job-live"}
    assert len(predictions.messages) == len(rows)
    assert stats["completions_ok"] == len(rows), "no LM call for a cancelled or failed job"


async def test_running_tasks_stop_with_their_lm_calls_when_the_job_is_cancelled_or_fails(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(12, seed=17)  # 2 jobs x 12: below the LM limiter's starting limit
    worker = Predictor(settings, options(registry))
    with SimulatedLMServer(in_process=True) as sim:
        sim.control.hold()  # every LM request waits at the simulated LM until released
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions") as (predictions,),
        ):
            cid = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            lm = sim_lm(sim.base_url)
            for job_id in ("job-cancel", "job-fail"):
                await publish_job(producer, registry, job_id=job_id, candidate_ids=[cid], rows=rows, lm=lm)
            async with running(worker):
                held = lambda stats: stats["held"] == 2 * len(rows)  # noqa: E731
                await asyncio.to_thread(sim.control.wait_until, held, timeout=60)
                cancel = Cancel(job_id="job-cancel", reason="test")
                await producer.produce_record(registry.name("jobs"), to_record(cancel, role="jobs"))
                failed = JobStatus(job_id="job-fail", state="failed", total_tasks=len(rows), reason="test")
                await producer.produce_record(registry.name("status"), to_record(failed, role="status"))
                # The predictor drops its requests: the simulated LM sees every held one end, unanswered.
                await asyncio.to_thread(sim.control.wait_until, lambda stats: stats["held"] == 0, timeout=60)
                await wait_until(
                    lambda: worker.runtime is not None and worker.runtime.stats.handled == 2 * len(rows)
                )
                sim.control.release()
                stopped = sim.control.stats()
        final = sim.control.stats()

    assert predictions.messages == [], "a stopped task produces no prediction"
    assert stopped["completions_ok"] == 0
    assert stopped["by_status"] == {"499": 2 * len(rows)}, "each request ended by the client, unanswered"
    assert final["requests_total"] == 2 * len(rows), "no LM request after the cancel or the failure"


async def test_an_expired_task_is_not_run_and_is_recorded_as_an_error(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(6, seed=19)
    worker = Predictor(settings, options(registry))
    with SimulatedLMServer(in_process=True) as sim:
        sim.control.hold()  # LM requests wait until released: tasks 2-3 are still running at their deadline
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions") as (predictions,),
        ):
            cid = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            lm = sim_lm(sim.base_url)
            published = await publish_job(
                producer, registry, job_id="job-late", candidate_ids=[cid], rows=[], lm=lm
            )
            now = utc_now()
            # 0-1: expired before they are read; 2-3: expire while their LM call is held; 4-5: in time
            deadlines = [now - timedelta(minutes=1)] * 2 + [now + timedelta(seconds=10)] * 2
            deadlines += [now + timedelta(minutes=10)] * 2
            for index, (row, deadline) in enumerate(zip(rows, deadlines, strict=True)):
                task = Task.build(
                    job_id=published.job.job_id, candidate_id=cid, example_index=index, example=row,
                    input_keys=["question"], lm=lm, deadline=deadline,
                )  # fmt: skip
                await producer.produce_record(registry.name("tasks"), to_record(task, role="tasks"))
            async with running(worker):
                await predictions.count(4, timeout=90)  # 0-3: two at once, two at their deadline
                sim.control.release()
                await predictions.count(len(rows))
        stats = sim.control.stats()

    records = {r.example_index: r for r in predictions.decoded(PredictionRecord)}
    assert all(records[i].outputs is not None and records[i].error is None for i in (4, 5))
    for index, when in (
        (0, "not run"),
        (1, "not run"),
        (2, "stopped while running"),
        (3, "stopped while running"),
    ):
        error = records[index].error
        assert error is not None and (error.type, error.systemic) == (DEADLINE_ERROR, False)
        assert "deadline" in error.message and when in error.message
    assert records[0].usage.lm_calls == 0 and records[0].latency_s == 0.0
    assert stats["completions_ok"] == 2 and stats["by_status"] == {"200": 2, "499": 2}, (
        "expired: no LM answer"
    )
