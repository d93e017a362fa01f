"""`dspex optimize` against the real broker, the test playing the optimize worker: the job id is
printed, progress counts candidates out of the known total, and the run ends with its summary and
the best program saved."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

import dspex
from dspex.cli import app
from dspex.client._reader import PartitionReader
from dspex.schemas import (
    JobMessage,
    OptimizeJob,
    OptimizeStatus,
    ProgramSpec,
    TrialRecord,
    UsageRecord,
    decode,
    encode,
    headers_for,
)
from dspex.serialization import candidate_id, dump_program
from dspex.streams.config import KafkaSettings
from dspex.streams.partitioner import partition_for
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

runner = CliRunner()


class FakeOptimizeWorker(threading.Thread):
    """Waits for the OptimizeJob, then writes two running statuses, the best program, and the end."""

    def __init__(self, settings: KafkaSettings, registry: TopicRegistry, best: dspex.Module) -> None:
        super().__init__(daemon=True)
        self.settings, self.registry, self.best = settings, registry, best
        self.job: OptimizeJob | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.job = self._wait_for_job()
            self._play(self.job)
        except BaseException as exc:  # handed to the test thread
            self.error = exc

    def _wait_for_job(self) -> OptimizeJob:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reader = PartitionReader(self.settings, self.registry.name("jobs"))
            try:
                reader.assign(dict.fromkeys(range(reader.partition_count())))
                jobs = [decode(m.value(), JobMessage) for m in reader.read_to_end()]
            finally:
                reader.close()
            found = [job for job in jobs if isinstance(job, OptimizeJob)]
            if found:
                return found[0]
            time.sleep(0.2)
        raise TimeoutError("no OptimizeJob on the jobs topic")

    def _play(self, job: OptimizeJob) -> None:
        producer = Producer(self.settings.confluent())
        program = dump_program(self.best)
        best_id = candidate_id(program)
        trials = [
            TrialRecord(step=0, candidate_id=job.candidate_id, score=25.0, num_examples=4),
            TrialRecord(step=1, candidate_id="c-labeled", score=50.0, num_examples=4),
            TrialRecord(step=1, candidate_id=best_id, score=75.0, num_examples=4),
        ]
        usage = UsageRecord(prompt_tokens=900, completion_tokens=100, cost_usd=0.002, lm_calls=40)
        for seq, state, upto in ((1, "running", 1), (2, "running", 3), (3, "completed", 3)):
            if state == "completed":
                self._produce(producer, "candidates", best_id, ProgramSpec.build(program, job_id=job.job_id))
            status = OptimizeStatus(
                job_id=job.job_id, name=job.name, state=state, optimizer=job.optimizer,  # type: ignore[arg-type]
                steps=trials[:upto], best_candidate_id=best_id if upto == 3 else job.candidate_id,
                best_score=75.0 if upto == 3 else 25.0, usage=usage, seq=seq,
            )  # fmt: skip
            self._produce(producer, "status", job.job_id, status)
            time.sleep(0.3)

    def _produce(self, producer: Producer, role: Any, key: str, model: Any) -> None:
        topic = self.registry.name(role)
        count = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
        producer.produce(
            topic,
            encode(model),
            key=key.encode(),
            headers=headers_for(model),
            partition=partition_for(key, count),
        )
        assert producer.flush(30) == 0


def test_optimize_prints_the_id_progress_and_a_summary(
    tmp_path: Path, settings: KafkaSettings, registry: TopicRegistry
) -> None:
    student = dspex.Predict("question -> answer")
    program, train, output = tmp_path / "qa.json", tmp_path / "train.jsonl", tmp_path / "best.json"
    student.save(program)
    train.write_text(
        "".join(json.dumps({"question": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(4))
    )
    best = dspex.Predict("question -> answer")
    best.demos = [dspex.Example(question="1+1?", answer="2")]
    worker = FakeOptimizeWorker(settings, registry, best)
    worker.start()
    result = runner.invoke(
        app,
        ["optimize", str(program), str(train), "--inputs", "question", "--metric", "exact_match:answer",
         "--knob", "num_candidate_programs=2", "--lm", "openai/test-model", "--name", "tiny",
         "--output", str(output), "--timeout", "60",
         "--bootstrap", settings.bootstrap_servers, "--prefix", registry.prefix],
    )  # fmt: skip
    worker.join(30)
    assert worker.error is None, worker.error
    assert result.exit_code == 0, result.output
    assert worker.job is not None and worker.job.name == "tiny"
    job_id = worker.job.job_id
    err = result.stderr
    assert f"job {job_id} (tiny) submitted; `dspex status {job_id[:12]}`" in err
    # bootstrap-rs with 2 random candidates tries 5: its total is known
    assert "optimize tiny: running, 1/5 candidates, step 1, best 25.0%" in err
    assert "optimize tiny: running, 3/5 candidates, step 2, best 75.0%" in err
    assert f"optimization {job_id} (tiny) completed" in err
    assert "  score: 25.00 -> 75.00" in err and "baseline: the program as given" in err
    assert "  candidates tried: 3" in err
    assert "  LM calls: 40 (0 from cache); tokens: 1,000; cost: $0.0020" in err
    assert "  wall time: " in err and f"  best program: saved to {output}" in err
    assert json.loads(output.read_text())["demos"][0]["answer"] == "2"
