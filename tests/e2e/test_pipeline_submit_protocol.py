"""The Kafka-native job protocol (docs/protocol.md), driven by Kafka's own console producer.

A submit message written as plain JSON by ``org.apache.kafka.tools.ConsoleProducer`` (what
``kafka-console-producer.sh`` runs; the kafka-tools jar is among the dev broker's jars) runs to
completion through an intake worker, a predictor, a scorer and the aggregator, and
``dspex results JOB`` reads its scores. The same message produced again publishes nothing new; a
submit naming an unknown metric lands in the DLQ and fails its job (``invalid_submit``); a job
written to the jobs topic without tasks fails after the intake's timeout (``tasks_missing``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_pipeline import Pipeline, predict_program, read_topic, wait_for

from dspex.dev import DevBroker
from dspex.schemas import (
    DeadLetter,
    EvalJob,
    JobMessage,
    JobStatus,
    MetricSpec,
    ScoreRecord,
    Task,
    decode,
    encode,
    task_id_for,
)
from dspex.schemas.programs import program_candidate_id
from dspex.serialization import dump_program
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
TASKS_TIMEOUT_S = 4.0


def console_produce(pipeline: Pipeline, topic: str, lines: list[tuple[str, str]]) -> None:
    """Produce ``key|value`` lines with Kafka's own ConsoleProducer (a JVM, as an operator would)."""
    libs = DevBroker().fetch()
    java = shutil.which("java")
    assert java is not None, "java is needed for Kafka's console producer"
    command = [java, "-Xmx256m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ConsoleProducer"]
    command += ["--bootstrap-server", pipeline.bootstrap, "--topic", topic]
    command += ["--property", "parse.key=true", "--property", "key.separator=|"]
    text = "".join(f"{key}|{value}\n" for key, value in lines)
    done = subprocess.run(command, input=text, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"console producer exited {done.returncode}:\n{done.stderr[-2000:]}"


def dspex(pipeline: Pipeline, *args: str) -> str:
    command = [sys.executable, "-m", "dspex.cli", *args, "--bootstrap", pipeline.bootstrap]
    command += ["--prefix", pipeline.prefix]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def documented_submit(sim: SimulatedLMServer) -> dict[str, Any]:
    """The submit message docs/protocol.md shows, its LM pointed at this test's simulated LM."""
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    message: dict[str, Any] = json.loads(re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)[0])
    message["lm"]["api_base"] = sim.base_url
    return message


def submit_json(job_id: str, sim: SimulatedLMServer, **changes: Any) -> str:
    """The documented submit message with another job id and ``changes``, as one line of JSON."""
    return json.dumps({**documented_submit(sim), "job_id": job_id, **changes})


def wait_state(
    pipeline: Pipeline, job_id: str, predicate: Callable[[JobStatus], bool], what: str
) -> JobStatus:
    return pipeline.wait_status(job_id, predicate, what)


def test_a_console_produced_submit_runs_to_completion(
    pipeline_factory: Callable[..., Pipeline], sim_factory: Callable[..., SimulatedLMServer]
) -> None:
    sim = sim_factory(latency=0.005)
    pipeline = pipeline_factory()
    pipeline.start_workers(1)
    pipeline.start("intake")
    pipeline.wait_ready()
    submit_topic = pipeline.registry.name("submit")

    documented = documented_submit(sim)
    job_id, examples = documented["job_id"], len(documented["examples"])
    line = json.dumps(documented)
    console_produce(pipeline, submit_topic, [(job_id, line)])
    final = wait_state(pipeline, job_id, lambda s: s.finished, "the submitted job to finish")
    assert (final.state, final.done, final.total_tasks, final.errors) == ("completed", examples, examples, 0)
    assert final.name == documented["name"]

    records = [
        ScoreRecord.model_validate_json(line)
        for line in dspex(pipeline, "results", job_id, "--format", "json").splitlines()
    ]
    assert sorted(r.example_index for r in records) == list(range(examples))
    candidate = program_candidate_id(dump_program(predict_program()))
    assert {r.candidate_id for r in records} == {candidate}
    assert all(r.task_id == task_id_for(job_id, candidate, r.example_index) for r in records)
    assert all(r.error is None and r.score in (0.0, 1.0) for r in records)

    # the same message again (a redelivery, or a producer retrying): nothing new is published
    console_produce(pipeline, submit_topic, [(job_id, line)])
    wait_for(lambda: pipeline.committed("intake", "submit") >= 2, 60, "the intake to commit the copy")
    tasks = [decode(m.value(), Task) for m in read_topic(pipeline.settings, pipeline.registry.name("tasks"))]
    jobs = [
        decode(m.value(), JobMessage) for m in read_topic(pipeline.settings, pipeline.registry.name("jobs"))
    ]
    assert len([t for t in tasks if t.job_id == job_id]) == examples
    assert len([j for j in jobs if isinstance(j, EvalJob) and j.job_id == job_id]) == 1
    assert sim.control.stats()["requests_total"] == examples


def test_bad_submits_and_missing_tasks_fail_their_jobs(
    pipeline_factory: Callable[..., Pipeline], sim_factory: Callable[..., SimulatedLMServer]
) -> None:
    sim = sim_factory(latency=0.005)
    pipeline = pipeline_factory()
    pipeline.start("aggregate")
    pipeline.start("intake", "--tasks-timeout", str(TASKS_TIMEOUT_S))
    submit_partitions = pipeline.partitions("submit")
    wait_for(
        lambda: sum(pipeline.assigned("intake").values()) == submit_partitions,
        150,
        "the intake to own the submit partitions (its heartbeat)",
        poll=0.5,
        detail=pipeline.report,
    )

    # an unknown metric (not built in, and no module the worker allows), input fields the examples
    # lack, and a message that is no submit at all (no program)
    bad_metric = submit_json("bad-metric", sim, metric="no_such_metric:answer")
    bad_inputs = submit_json("bad-inputs", sim, input_keys=["prompt"])
    no_program = json.dumps(
        {
            "schema_version": "1.0",
            "job_id": "no-program",
            "examples": [{"q": "1"}],
            "input_keys": ["q"],
            "metric": "m",
        }
    )
    console_produce(
        pipeline,
        pipeline.registry.name("submit"),
        [("bad-metric", bad_metric), ("bad-inputs", bad_inputs), ("no-program", no_program)],
    )
    # an evaluation written straight to the jobs topic whose tasks never come
    orphan = EvalJob(
        job_id="orphan",
        candidate_ids=["c" * 32],
        metric=MetricSpec(name="exact_match:answer"),
        num_examples=3,
    )
    console_produce(pipeline, pipeline.registry.name("jobs"), [("orphan", encode(orphan).decode())])

    cases = (("bad-metric", "no_such_metric"), ("bad-inputs", "prompt"), ("no-program", "program"))
    for job_id, needle in cases:
        status = wait_state(pipeline, job_id, lambda s: s.finished, f"{job_id} to fail")
        assert (status.state, status.stop_reason) == ("failed", "invalid_submit")
        assert status.reason is not None and needle in status.reason
        shown = JobStatus.model_validate_json(dspex(pipeline, "status", job_id, "--json"))
        assert (shown.stop_reason, shown.reason) == ("invalid_submit", status.reason)
    letters = [
        decode(m.value(), DeadLetter) for m in read_topic(pipeline.settings, pipeline.registry.name("dlq"))
    ]
    reasons = [d.reason for d in letters if d.original_topic == pipeline.registry.name("submit")]
    assert sorted(reasons) == ["invalid_submit", "schema_invalid", "security_policy"]

    status = wait_state(pipeline, "orphan", lambda s: s.finished, "the job without tasks to fail")
    assert (status.state, status.stop_reason) == ("failed", "tasks_missing")
    assert status.reason is not None and f"{TASKS_TIMEOUT_S:g} s" in status.reason
