"""Memory of reading a big job's results: ``Client.results`` (a list) vs ``Client.iter_results`` (a stream).

    .venv/bin/python bench/results_memory.py                         # 50,000, 200,000 and 400,000 records
    .venv/bin/python bench/results_memory.py --examples 1000000

Starts a dev broker of its own (temporary data dir), writes one finished job per size straight to
the topics as the workers would (one candidate, a ScoreRecord per example with a short answer and a
~130-character reasoning, then its completed JobStatus), and reads each job back in a fresh child
process per reader (``iter_results``, ``results``, ``iter_results`` again), whose peak RSS is
sampled every 10 ms by a thread of its own. No LM and no workers are involved: this measures the
client's reading only.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
from common import machine_summary, markdown_table, own_broker
from confluent_kafka import Producer

from dspex.client import Client
from dspex.schemas import CandidateAggregate, JobStatus, ScoreRecord, encode, utc_now
from dspex.schemas.headers import headers_for
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import PRODUCER_DEFAULTS
from dspex.streams.topics import TopicRegistry

PREFIX = "mem."
CANDIDATE = "c-bench"
MB = 1024 * 1024
READERS = ("iter_results", "results", "iter_results")
REASONING = "adding one to the number gives the answer. " * 3


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


# --------------------------------------------------------------------------- the child: one read


def _read(reader: str, bootstrap: str, job_id: str) -> dict[str, Any]:
    process = psutil.Process()
    peak = [process.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    before = process.memory_info().rss
    started = time.perf_counter()
    with Client(bootstrap, prefix=PREFIX) as client:
        if reader == "results":
            count = len(client.results(job_id))
        else:
            count = sum(1 for _ in client.iter_results(job_id))
    wall_s = time.perf_counter() - started
    stop.set()
    peak[0] = max(peak[0], process.memory_info().rss)
    return {"reader": reader, "count": count, "before": before, "peak": peak[0], "wall_s": wall_s}


# --------------------------------------------------------------------------- the parent


def _write_job(settings: KafkaSettings, registry: TopicRegistry, job_id: str, examples: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {**settings.confluent(), "partitioner": PRODUCER_DEFAULTS["partitioner"], "linger.ms": 50}
    )
    topic = registry.name("scores")
    for index in range(examples):
        record = ScoreRecord(
            job_id=job_id, candidate_id=CANDIDATE, example_index=index, task_id=f"{job_id}-{index}",
            outputs={"answer": str(index + 1), "reasoning": REASONING},
            score=1.0, latency_s=0.1, worker_id="bench-writer",
        )  # fmt: skip
        _produce(producer, topic, job_id, record)
    status = JobStatus(
        job_id=job_id, state="completed", total_tasks=examples, done=examples,
        candidates=[CandidateAggregate(candidate_id=CANDIDATE, total=examples, done=examples,
                                       score_sum=math.fsum([1.0] * examples))],
        seq=examples, started_at=utc_now(),
    )  # fmt: skip
    _produce(producer, registry.name("status"), job_id, status)
    if producer.flush(120):
        raise RuntimeError(f"job {job_id}: records still unacknowledged after 120 s")


def _produce(producer: Producer, topic: str, key: str, model: Any) -> None:
    while True:
        try:
            producer.produce(topic, encode(model), key=key.encode(), headers=headers_for(model))
            break
        except BufferError:  # librdkafka's queue is full: let it drain
            producer.poll(0.1)
    producer.poll(0)


def _measure(bootstrap: str, job_id: str) -> list[dict[str, Any]]:
    rows = []
    for reader in READERS:
        argv = [sys.executable, __file__, "--child", reader, "--bootstrap", bootstrap, "--job", job_id]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def _report(measured: dict[int, list[dict[str, Any]]]) -> str:
    rows = [
        [f"{examples:,}", m["reader"], m["count"], m["before"] / MB, m["peak"] / MB,
         (m["peak"] - m["before"]) / MB, m["wall_s"]]
        for examples, runs in measured.items()
        for m in runs
    ]  # fmt: skip
    headers = ["records", "read with", "records read", "RSS MB before", "peak RSS MB", "growth MB", "wall s"]
    return "\n".join([
        f"One finished job's results read by a fresh client process ({machine_summary()}); records "
        "written straight to a dev broker, ~560 bytes of JSON each.\n",
        markdown_table(headers, rows),
        "\n- Command: `" + " ".join([".venv/bin/python", "bench/results_memory.py", *sys.argv[1:]]) + "`",
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=_ints, default=[50_000, 200_000, 400_000], help="job sizes")
    parser.add_argument("--child", choices=["results", "iter_results"], help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_read(args.child, args.bootstrap, args.job)))
        return 0
    with own_broker("results-memory") as broker:
        settings, registry = KafkaSettings(bootstrap_servers=broker.bootstrap), TopicRegistry(PREFIX)
        ensure_topics(settings, registry)
        measured = {}
        for examples in args.examples:
            job_id = f"bench-{examples}"
            _write_job(settings, registry, job_id, examples)
            measured[examples] = _measure(broker.bootstrap, job_id)
        print(_report(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
