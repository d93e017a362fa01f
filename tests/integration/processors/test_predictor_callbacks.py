"""A user callback named by import path (``--callback``) runs in the predictor, and what it heard is in
each prediction's result, through the scorer to the score records."""

from __future__ import annotations

import pytest
from workers_kafka import publish_candidate, publish_job, running, tails

import dspex
from dspex.processors.common import WorkerOptions
from dspex.processors.predictor import Predictor
from dspex.processors.scorer import Scorer
from dspex.processors.security import SecurityPolicy
from dspex.schemas import LMSpec, PredictionRecord, ScoreRecord
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry
from dspex.testing import SimulatedLMServer, arithmetic_rows

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

CALLBACK = "callbacks_kafka:Marking"


async def test_a_user_callback_runs_in_the_worker_and_its_events_are_in_the_result(
    settings: KafkaSettings, registry: TopicRegistry
) -> None:
    rows = arithmetic_rows(3, seed=11)
    options = WorkerOptions(
        prefix=registry.prefix, fast_groups=True, metrics=False,
        policy=SecurityPolicy(allow_modules=["callbacks_kafka"]), callbacks=(CALLBACK,),
        inline_builtin_metrics=False,  # the prediction, then the scorer's score: both carry the events
    )  # fmt: skip
    predictor, scorer = Predictor(settings, options), Scorer(settings, options)
    with SimulatedLMServer(in_process=True) as sim:
        lm = LMSpec(model="openai/simulated", api_base=sim.base_url, cache=False)
        async with (
            AsyncProducer(settings) as producer,
            tails(settings, registry, "predictions", "scores") as (predictions, scores),
        ):
            cid = await publish_candidate(producer, registry, dspex.Predict("question -> answer"))
            await publish_job(producer, registry, job_id="job-cb", candidate_ids=[cid], rows=rows, lm=lm)
            async with running(predictor), running(scorer):
                await predictions.count(len(rows))
                await scores.count(len(rows))

    records: list[PredictionRecord] = predictions.decoded(PredictionRecord)
    assert all(record.error is None for record in records)
    for record in records:
        events = record.callback_events or []
        assert {event.callback for event in events} == {CALLBACK}
        hooks = [event.hook for event in events]
        assert hooks[0] == "on_module_start" and hooks[-1] == "on_module_end"
        assert {"on_lm_start", "on_lm_attempt", "on_lm_request", "on_lm_end"} <= set(hooks)
        assert events[0].returned == {"marked": "Predict", "inputs": ["question"]}, "its own hook ran"
        attempt = next(event for event in events if event.hook == "on_lm_attempt")
        assert attempt.data["status"] == 200 and attempt.data["endpoint"] == sim.base_url
        assert attempt.instance == "LM"
    by_task = {record.task_id: record.callback_events for record in records}
    assert all(score.callback_events == by_task[score.task_id] for score in scores.decoded(ScoreRecord))
