"""Hostile and broken input: every bad message is dead-lettered with its reason, accounted to its
job, nothing is sent where the workers do not allow, the workers keep running; and no byte written
to any topic carries the API key.

One pipeline for the module: a simulated LM that requires an API key, which only the workers'
environment holds (DSPEX_SIM_KEY), and worker allow-lists naming the simulated LM, a second
"allowed" listener and that one key variable.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from resilience_helpers import (
    CountingListener,
    Pipeline,
    assert_exact,
    devset,
    pipeline_of,
    program,
    sim_lm,
    topic_bytes,
)
from typer.testing import CliRunner

from dspex.cli import dlq
from dspex.modules import ChainOfThought
from dspex.schemas import EvalJob, LMSpec, MetricSpec, ProgramSpec, ScoreRecord, Task
from dspex.schemas.tasks import task_id_for
from dspex.serialization import dump_program
from dspex.signatures import make_signature
from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import Record, to_record
from dspex.streams.topics import TopicRegistry
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

KEY_ENV = "DSPEX_SIM_KEY"
API_KEY = f"sk-resilience-{uuid.uuid4().hex}"


class Keyed:
    def __init__(self, pipeline: Pipeline, sim: SimulatedLMServer, refused: CountingListener,
                 allowed: CountingListener) -> None:  # fmt: skip
        self.pipeline, self.sim, self.refused, self.allowed = pipeline, sim, refused, allowed
        self.settings = KafkaSettings(bootstrap_servers=pipeline.bootstrap)
        self.registry = TopicRegistry(pipeline.prefix)


@pytest.fixture(scope="module")
def keyed(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    work_dir = tmp_path_factory.mktemp("poison") / "stack"
    with (
        SimulatedLMServer(latency=0.01, require_api_key=API_KEY) as sim,
        CountingListener() as refused,
        CountingListener() as allowed,
        pipeline_of(kafka_bootstrap, prefix, work_dir, env={KEY_ENV: API_KEY}) as pipeline,
    ):
        pipeline.start("aggregate")
        pipeline.start("score")
        pipeline.start(
            "predict", "--allow-api-base", sim.base_url, "--allow-api-base", allowed.base_url,
            "--allow-key-env", KEY_ENV,
        )  # fmt: skip
        pipeline.wait_ready()
        yield Keyed(pipeline, sim, refused, allowed)


def _publish(settings: KafkaSettings, items: list[tuple[str, Record]]) -> None:
    async def send() -> None:
        async with AsyncProducer(settings) as producer:
            for topic, record in items:
                await producer.produce_record(topic, record)

    asyncio.run(send())


def _job(job_id: str, candidate_id: str, n: int, lm: LMSpec) -> tuple[EvalJob, list[Task]]:
    job = EvalJob(
        job_id=job_id,
        candidate_ids=[candidate_id],
        metric=MetricSpec(name="numeric_equal:answer"),
        lm=lm,
        num_examples=n,
    )
    rows = [example.to_dict() for example in devset(n, seed=61)]
    tasks = [
        Task.build(job_id=job_id, candidate_id=candidate_id, example_index=i, example=row,
                   input_keys=["question"], lm=lm)
        for i, row in enumerate(rows)
    ]  # fmt: skip
    return job, tasks


def _records(
    keyed: Keyed, job: EvalJob, tasks: list[Task], spec: ProgramSpec | None
) -> list[tuple[str, Record]]:
    name = keyed.registry.name
    items = [(name("candidates"), to_record(spec, role="candidates"))] if spec is not None else []
    items.append((name("jobs"), to_record(job, role="jobs")))
    return items + [(name("tasks"), to_record(task, role="tasks")) for task in tasks]


def _broken(record: Record, value: bytes) -> Record:
    """The same key and headers (so the job is still named), another value."""
    return Record(key=record.key, value=value, headers=record.headers)


def _schema_invalid(record: Record) -> bytes:
    data: dict[str, Any] = json.loads(record.value or b"{}")
    data["example_index"] = "not a number"
    return json.dumps(data).encode()


def test_poison_is_dead_lettered_accounted_and_survived(keyed: Keyed) -> None:
    pipeline, sim = keyed.pipeline, keyed.sim
    pids = {worker.name: worker.pid for worker in pipeline.stack.workers}
    good_lm = LMSpec(model="openai/simulated", api_base=sim.base_url, api_key_env=KEY_ENV, cache=False)
    good = ProgramSpec.build(dump_program(program()))
    later = ProgramSpec.build(dump_program(ChainOfThought(make_signature("question -> answer", "Later."))))
    hostile_program = {**dump_program(program()), "type": "subprocess:Popen"}
    hostile = ProgramSpec.build(hostile_program)
    ids = {
        name: f"poison-{name}-{uuid.uuid4().hex[:6]}"
        for name in ("broken", "unknown", "module", "base", "key")
    }

    broken_job, broken_tasks = _job(ids["broken"], good.candidate_id, 4, good_lm)
    items = _records(keyed, broken_job, broken_tasks, good)
    items[-2] = (items[-2][0], _broken(items[-2][1], b"\xff\xfe this is not JSON"))
    items[-1] = (items[-1][0], _broken(items[-1][1], _schema_invalid(items[-1][1])))
    unknown_job, unknown_tasks = _job(ids["unknown"], later.candidate_id, 1, good_lm)
    items += _records(keyed, unknown_job, unknown_tasks, None)  # its candidate is not published
    items += _records(keyed, *_job(ids["module"], hostile.candidate_id, 1, good_lm), hostile)
    refused_lm = LMSpec(model="openai/simulated", api_base=keyed.refused.base_url, cache=False)
    items += _records(keyed, *_job(ids["base"], good.candidate_id, 1, refused_lm), None)
    secret_lm = LMSpec(
        model="openai/simulated", api_base=keyed.allowed.base_url, api_key_env="HOME", cache=False
    )
    items += _records(keyed, *_job(ids["key"], good.candidate_id, 1, secret_lm), None)
    _publish(keyed.settings, items)

    statuses = {name: pipeline.client.wait(job_id, timeout=90) for name, job_id in ids.items()}
    broken = statuses["broken"]
    assert (broken.state, broken.done, broken.errors) == ("completed", 4, 2)
    assert (statuses["unknown"].done, statuses["unknown"].errors) == (1, 1)
    for name in ("module", "base", "key"):
        assert statuses[name].state == "failed", (name, statuses[name])
        assert "security_policy" in (statuses[name].reason or ""), statuses[name].reason
    assert "subprocess" in (statuses["module"].reason or "")
    assert keyed.refused.base_url in (statuses["base"].reason or "")
    assert "HOME" in (statuses["key"].reason or "")

    letters = dlq.read_dead_letters(keyed.settings, keyed.registry.name("dlq"))
    reasons = {(item.letter.job_id, item.letter.reason) for item in letters}
    assert reasons == {
        (ids["broken"], "undecodable"),
        (ids["broken"], "schema_invalid"),
        (ids["unknown"], "unknown_candidate"),
        (ids["module"], "security_policy"),
        (ids["base"], "security_policy"),
        (ids["key"], "security_policy"),
    }
    assert (keyed.refused.requests, keyed.allowed.requests) == (0, 0)
    pipeline.stack.check_running()
    assert {worker.name: worker.pid for worker in pipeline.stack.workers} == pids

    # The tooling: list one job's dead letters as JSON, then fix the cause and replay.
    app = typer.Typer()
    dlq.register(app)
    where = ["--bootstrap", pipeline.bootstrap, "--prefix", pipeline.prefix]
    listed = CliRunner().invoke(app, ["dlq", "list", *where, "--job", ids["module"], "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines() if line.strip()]
    assert [(row["reason"], row["original_topic"]) for row in rows] == [
        ("security_policy", keyed.registry.name("tasks"))
    ]
    dry = CliRunner().invoke(app, ["dlq", "replay", *where, "--job", ids["unknown"], "--dry-run"])
    assert dry.exit_code == 0 and "1 messages would be replayed" in dry.output, dry.output
    _publish(keyed.settings, [(keyed.registry.name("candidates"), to_record(later, role="candidates"))])
    replayed = CliRunner().invoke(app, ["dlq", "replay", *where, "--job", ids["unknown"]])
    assert replayed.exit_code == 0 and "replayed 1 messages" in replayed.output, replayed.output
    done = pipeline.client.results(ids["unknown"])
    assert len(done) == 1  # first result wins: the replay's prediction is a duplicate downstream


def test_no_topic_carries_the_api_key(keyed: Keyed) -> None:
    pipeline = keyed.pipeline
    examples = devset(100, seed=71)
    job_id = pipeline.submit(examples, sim_lm(keyed.sim.base_url, api_key_env=KEY_ENV))
    status, _ = pipeline.finish(job_id, timeout=120)
    assert_exact(pipeline, job_id, status, len(examples))
    assert keyed.sim.control.stats()["by_status"].get("401", 0) == 0  # the workers did send the key

    topics = sorted(t for t in KafkaAdmin(keyed.settings).partition_counts() if t.startswith(pipeline.prefix))
    assert len(topics) >= 9, topics  # the pipeline's topics and the aggregator's changelogs
    needles = [API_KEY.encode(), base64.b64encode(API_KEY.encode()), API_KEY[8:40].encode()]
    scanned = 0
    for chunk in topic_bytes(keyed.settings, topics):
        scanned += len(chunk)
        assert not any(needle in chunk for needle in needles), "the API key was written to a topic"
    assert scanned > 100_000
    for worker in pipeline.stack.workers:
        assert API_KEY not in worker.log_path.read_text(errors="replace"), f"{worker.name} logged the key"


def test_scores_topic_poison_is_dead_lettered_and_accounted(keyed: Keyed) -> None:
    # Example 1's only score is poison (its headers still name the task): the job completes only
    # if the aggregator dead-letters it and counts an error for that task, as every worker does.
    pipeline, registry = keyed.pipeline, keyed.registry
    lm = LMSpec(model="openai/simulated", api_base=keyed.sim.base_url, api_key_env=KEY_ENV, cache=False)
    spec = ProgramSpec.build(dump_program(program()))
    job_id = f"poison-scores-{uuid.uuid4().hex[:6]}"
    job, tasks = _job(job_id, spec.candidate_id, 2, lm)
    real = ScoreRecord(
        job_id=job_id,
        candidate_id=spec.candidate_id,
        example_index=1,
        task_id=task_id_for(job_id, spec.candidate_id, 1),
        score=1.0,
    )
    poison = _broken(to_record(real, role="scores"), b"\xff not a score")
    items = [*_records(keyed, job, tasks[:1], spec), (registry.name("scores"), poison)]
    _publish(keyed.settings, items)

    status = pipeline.client.wait(job_id, timeout=90)
    assert (status.state, status.done, status.errors) == ("completed", 2, 1), status
    [failed] = [record for record in pipeline.client.results(job_id) if record.error is not None]
    assert failed.example_index == 1 and "undecodable" in (failed.error.message if failed.error else "")
    letters = dlq.read_dead_letters(keyed.settings, registry.name("dlq"))
    mine = [item.letter for item in letters if item.letter.job_id == job_id]
    assert [(letter.original_topic, letter.reason, letter.example_index) for letter in mine] == [
        (registry.name("scores"), "undecodable", 1)
    ]
    assert mine[0].value_bytes() == b"\xff not a score"
