"""What a submission puts on the topics (counts, keys, headers, ids, no secrets), and what it refuses
before anything is produced."""

from __future__ import annotations

import time

import pytest
from client_kafka import read_topic

import dspex
from dspex.client import Client
from dspex.errors import BrokerUnavailableError, MetricError, SecurityPolicyError
from dspex.schemas import (
    HEADER_CANDIDATE_ID,
    HEADER_EXAMPLE_INDEX,
    HEADER_JOB_ID,
    HEADER_SCHEMA,
    EvalJob,
    JobMessage,
    ProgramSpec,
    Task,
    decode,
    task_id_for,
)
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry
from dspex.testing import arithmetic_dataset

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

SECRET = "sk-test-0123456789-NEVER-ON-A-TOPIC"


def _lm() -> dspex.LM:
    return dspex.LM("openai/simulated", api_base="http://127.0.0.1:9/v1", api_key=SECRET,
                    api_key_env="SIM_KEY", cache=False, top_p=0.5)  # fmt: skip


def _every_byte(settings: KafkaSettings, registry: TopicRegistry) -> bytes:
    chunks = []
    for spec in registry.specs():
        for message in read_topic(settings, spec.name):
            chunks += [message.key() or b"", message.value() or b""]
            chunks += [value or b"" for _, value in message.headers() or []]
    return b"".join(chunks)


async def test_evaluate_many_publishes_candidates_then_the_job_then_every_task(
    client: Client, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    devset = arithmetic_dataset(50, seed=3)
    plain, cot = dspex.Predict("question -> answer"), dspex.ChainOfThought("question -> answer")
    with dspex.context(lm=_lm()):
        job_id = await client.aevaluate_many([plain, cot, plain], devset, "exact_match:answer", wait=False,
                                             name="submit-test", max_errors=5, max_cost_usd=1.5)  # fmt: skip
    assert isinstance(job_id, str)

    specs = [decode(m.value(), ProgramSpec) for m in read_topic(settings, registry.name("candidates"))]
    ids = [dspex.candidate_id(plain), dspex.candidate_id(cot)]
    assert sorted(s.candidate_id for s in specs) == sorted(ids)  # the repeated program is published once
    assert all(s.id_matches and s.job_id == job_id for s in specs)

    jobs = read_topic(settings, registry.name("jobs"))
    assert [m.key() for m in jobs] == [job_id.encode()]
    job = decode(jobs[0].value(), JobMessage)
    assert isinstance(job, EvalJob)
    assert (job.candidate_ids, job.num_examples, job.total_tasks) == (ids, 50, 100)
    assert (job.metric.name, job.metric.kind, job.name) == ("exact_match:answer", "builtin", "submit-test")
    assert (job.max_errors, job.max_cost_usd) == (5, 1.5)
    assert job.lm is not None and (job.lm.model, job.lm.api_key_env, job.lm.extra) == (
        "openai/simulated", "SIM_KEY", {"top_p": 0.5},
    )  # fmt: skip

    messages = read_topic(settings, registry.name("tasks"))
    tasks = [decode(m.value(), Task) for m in messages]
    assert len(tasks) == 100
    assert {(t.candidate_id, t.example_index) for t in tasks} == {(c, i) for c in ids for i in range(50)}
    for message, task in zip(messages, tasks, strict=True):
        assert (
            message.key()
            == task.task_id.encode()
            == task_id_for(job_id, task.candidate_id, task.example_index).encode()
        )
        headers = dict(message.headers())
        assert headers[HEADER_JOB_ID] == job_id.encode()
        assert headers[HEADER_CANDIDATE_ID] == task.candidate_id.encode()
        assert headers[HEADER_EXAMPLE_INDEX] == str(task.example_index).encode()
        assert headers[HEADER_SCHEMA].startswith(b"Task/")
        assert task.lm == job.lm and task.input_keys == ["question"]
        assert task.example == devset[task.example_index].to_dict()

    assert SECRET.encode() not in _every_byte(settings, registry)


async def test_ten_thousand_tasks_go_out_in_well_under_a_few_seconds(
    client: Client, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    devset = arithmetic_dataset(10_000, seed=5)
    started = time.perf_counter()
    job_id = await client.aevaluate(
        dspex.Predict("question -> answer"), devset, "exact_match:answer", wait=False
    )
    elapsed = time.perf_counter() - started
    admin = KafkaAdmin(settings)
    topic = registry.name("tasks")
    partitions = admin.partition_counts([topic])[topic]
    ends = admin.end_offsets([(topic, p) for p in range(partitions)])
    assert sum(ends.values()) == 10_000, job_id
    # A loose bound (about 1-3 s on an idle machine; 7 s seen under a load average of 20).
    assert elapsed < 12.0, f"10,000 tasks took {elapsed:.2f} s to be acknowledged"


@pytest.mark.parametrize(
    ("metric", "error"),
    [
        ("nope:answer", "unknown metric"),
        ("no_such_module_xyz:score", "cannot be imported"),
        (42, "a metric must be"),
    ],
)
async def test_an_unknown_metric_is_refused_before_anything_is_produced(
    settings: KafkaSettings, topic_prefix: str, metric: object, error: str
) -> None:
    async with Client(kafka=settings, prefix=topic_prefix) as client:
        with pytest.raises(MetricError, match=error):
            await client.aevaluate(dspex.Predict("q -> a"), arithmetic_dataset(3), metric, wait=False)
    mine = [name for name in KafkaAdmin(settings).partition_counts() if name.startswith(topic_prefix)]
    assert mine == []  # not even the topics were created


async def test_allow_lists_are_checked_at_submit_time(settings: KafkaSettings, topic_prefix: str) -> None:
    devset, program = arithmetic_dataset(3), dspex.Predict("question -> answer")
    async with Client(kafka=settings, prefix=topic_prefix, allow_modules=["mypkg"]) as client:
        with pytest.raises(SecurityPolicyError, match=r"os\.path"):
            await client.aevaluate(program, devset, "os.path:join", wait=False)
    async with Client(
        kafka=settings, prefix=topic_prefix, allow_api_bases=["http://lm.internal/v1"]
    ) as client:
        with dspex.context(lm=_lm()), pytest.raises(SecurityPolicyError, match=r"127\.0\.0\.1:9"):
            await client.aevaluate(program, devset, "exact_match:answer", wait=False)
    assert [n for n in KafkaAdmin(settings).partition_counts() if n.startswith(topic_prefix)] == []


def test_an_unreachable_broker_is_reported_within_ten_seconds() -> None:
    started = time.monotonic()
    with (
        Client("127.0.0.1:1", prefix="nowhere.") as client,
        pytest.raises(BrokerUnavailableError, match=r"127\.0\.0\.1:1"),
    ):
        client.evaluate(dspex.Predict("question -> answer"), arithmetic_dataset(2), "exact_match:answer")
    assert time.monotonic() - started < 10.0
