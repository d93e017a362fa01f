"""LM flow control in the predictor, against the real broker and the simulated LM: tasks waiting for
the adaptive limiter fill the in-flight bound and pause the partitions; a task whose retries run out
becomes an error prediction (not systemic, so the job goes on)."""

from __future__ import annotations

import pytest
from workers_kafka import publish_candidate, publish_job, running, tails, wait_until

import dspex
from dspex.processors.common import WorkerOptions
from dspex.processors.endpoints import EndpointOptions
from dspex.processors.predictor import Predictor
from dspex.processors.security import SecurityPolicy
from dspex.schemas import LMSpec, PredictionRecord
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry
from dspex.testing import SimulatedLMServer, arithmetic_rows

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def _worker(settings: KafkaSettings, registry: TopicRegistry, base_url: str, **flow: object) -> Predictor:
    options = WorkerOptions(
        prefix=registry.prefix,
        fast_groups=True,
        metrics=False,
        concurrency=4,
        policy=SecurityPolicy(allow_api_bases=[base_url]),
        endpoints=EndpointOptions(**flow),  # type: ignore[arg-type]
        inline_builtin_metrics=False,  # the tests read the predictions
    )
    # A read-ahead of 4 beyond the 4 running: the partitions pause at 8 outstanding tasks.
    return Predictor(settings, options, read_ahead=4)


async def test_a_saturated_limiter_pauses_the_partitions(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(40, seed=5)
    with SimulatedLMServer(in_process=True) as sim:
        sim.control.hold()
        worker = _worker(settings, registry, sim.base_url, initial_limit=1)
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions") as (predictions,),
        ):
            cid = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            lm = LMSpec(model="openai/simulated", api_base=sim.base_url, cache=False)
            await publish_job(producer, registry, job_id="job-flow", candidate_ids=[cid], rows=rows, lm=lm)
            async with running(worker):
                runtime = worker.runtime
                assert runtime is not None
                await wait_until(lambda: bool(runtime.paused_partitions()), what="the partitions paused")
                await wait_until(lambda: sim.control.stats()["held"] == 1, what="one call at the LM")
                assert sim.control.stats()["held"] == 1  # limit 1: the other handlers wait for it
                beat = worker.heartbeat()
                assert beat.limit == 1.0 and beat.breaker_state == "closed"
                assert [e.api_base for e in beat.endpoints] == [sim.base_url]
                assert runtime.outstanding >= 8  # 4 running (waiting on the limiter) + the backlog
                sim.control.release()
                await predictions.count(len(rows))
    records = predictions.decoded(PredictionRecord)
    assert {r.example_index for r in records} == set(range(len(rows)))
    assert not [r for r in records if r.error is not None]


async def test_exhausted_retries_become_error_predictions(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(6, seed=7)
    with SimulatedLMServer(in_process=True, fail=1.0) as sim:
        worker = _worker(settings, registry, sim.base_url, breaker_failures=1000)
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions") as (predictions,),
        ):
            cid = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            lm = LMSpec(model="openai/simulated", api_base=sim.base_url, cache=False, max_retries=1)
            await publish_job(producer, registry, job_id="job-fail", candidate_ids=[cid], rows=rows, lm=lm)
            async with running(worker):
                await predictions.count(len(rows))
        assert sim.control.stats()["by_status"]["500"] == 2 * len(rows)  # one try and one retry each
    errors = [r.error for r in predictions.decoded(PredictionRecord)]
    assert all(e is not None and e.type == "LMServerError" and not e.systemic for e in errors), errors
