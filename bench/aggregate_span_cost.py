"""What the aggregator's spans cost it per score record, in CPU.

Reproduce (about 20 seconds on a 2-core machine):

    .venv/bin/python bench/aggregate_span_cost.py
    .venv/bin/python bench/aggregate_span_cost.py --records 20000 --rounds 5

The aggregator's own batch code path, without a broker: score records (one job, every record a
new example) go through ``Aggregator._apply`` in batches of ``BATCH_MAX``, each batch's writes are
put in the tables as ``process`` puts them (the changelog sends left out: they cost the same in
every configuration), then the batch's spans end. Configurations:

- ``off``: tracing off (the default): no span work at all;
- ``unsampled``: tracing on, every record's ``traceparent`` unsampled (what 99% of records are at
  the default 1% sampling): a header read per record;
- ``sampled``: tracing on, every record sampled: a span per record, its job's counts, its export
  (to the SDK's in-memory exporter, on the batch processor's thread, whose CPU is counted too).

Rounds interleave the configurations; the table gives each one's median CPU microseconds per record
(process CPU time: every thread) and the difference from ``off``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dspex.observability import tracing
from dspex.observability.tracing import TracingSettings
from dspex.processors.aggregate_spans import batch_spans
from dspex.processors.aggregate_state import AggregateBatch, StatusClock
from dspex.processors.aggregator import BATCH_MAX, Aggregator
from dspex.processors.aggregator_options import AggregatorOptions
from dspex.schemas import EvalJob, MetricSpec, ScoreRecord, encode
from dspex.streams.config import KafkaSettings

PREFIX = "bench."
MODES = ("off", "unsampled", "sampled")


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int
    offset: int
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class _Event:
    message: _Message
    value: bytes


def _events(records: int, sampled: bool | None) -> list[_Event]:
    metric = MetricSpec(name="exact_match:answer")
    job = EvalJob(job_id="j1", candidate_ids=["c1"], metric=metric, num_examples=records)
    events = [_Event(_Message(PREFIX + "jobs", 0, 0, []), encode(job))]
    for index in range(records):
        score = ScoreRecord(
            job_id="j1", candidate_id="c1", example_index=index, task_id=f"t{index}", score=1.0
        )
        flags = "01" if sampled else "00"
        headers = (
            [] if sampled is None else [("traceparent", f"00-{index + 1:032x}-{7:016x}-{flags}".encode())]
        )
        events.append(_Event(_Message(PREFIX + "scores", 0, index, headers), encode(score)))
    return events


def _run(aggregator: Aggregator, events: list[_Event]) -> float:
    """CPU seconds to apply ``events`` batch by batch, spans exported included."""
    aggregator.jobs.data.clear()
    aggregator.chunks.data.clear()
    started = time.process_time()
    for start in range(0, len(events), BATCH_MAX):
        batch = AggregateBatch(aggregator.jobs.data, aggregator.chunks.data, StatusClock())
        aggregator._spans = batch_spans(aggregator.jobs.data, aggregator.chunks.data)
        for event in events[start : start + BATCH_MAX]:
            aggregator._apply(batch, event)  # type: ignore[arg-type]  # the fields _apply reads
        result = batch.finish()
        for table, writes in ((aggregator.jobs, result.jobs), (aggregator.chunks, result.chunks)):
            for key, (_, value) in writes.items():
                table.data[key] = value
        if aggregator._spans is not None:
            aggregator._spans.end()
    assert tracing.flush(30.0)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    options = AggregatorOptions(prefix=PREFIX, data_dir=Path(tempfile.mkdtemp()), metrics=False)
    aggregator = Aggregator(KafkaSettings(bootstrap_servers="127.0.0.1:9"), options, partitions=1)
    workloads = {
        "off": _events(args.records, None),
        "unsampled": _events(args.records, False),
        "sampled": _events(args.records, True),
    }
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            # a fresh exporter each time: stopping tracing shuts the last one down
            settings = TracingSettings(exporter=InMemorySpanExporter(), sample_ratio=0.0)
            tracing.enable(None if mode == "off" else settings)
            cpu[mode].append(_run(aggregator, workloads[mode]) / args.records * 1e6)
    tracing.disable()
    off = statistics.median(cpu["off"])
    print(f"{args.records} records per run, {args.rounds} rounds; CPU µs per record (median):")
    print("| tracing | µs/record | vs off | runs |")
    print("|---|---|---|---|")
    for mode in MODES:
        median = statistics.median(cpu[mode])
        runs = " / ".join(f"{value:.1f}" for value in cpu[mode])
        print(f"| {mode} | {median:.1f} | {median - off:+.1f} | {runs} |")


if __name__ == "__main__":
    main()
