"""Group lag from the admin API (with no member alive) and the LM metrics (written by the
PrometheusCallback from the LM's callback events) against the simulated LM (a simulation, not a
model) with a 429 burst."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from dspex.configuration import context
from dspex.lm import LM
from dspex.lm.retry import RetryPolicy
from dspex.observability.aggregator import AggregatorMetrics
from dspex.observability.callbacks import PrometheusCallback
from dspex.observability.lag import GroupLagExporter, pipeline_groups
from dspex.schemas import JobStatus, encode
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry
from dspex.testing import SimulatedLMServer


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.mark.kafka
async def test_lag_of_a_group_without_members_is_exported(kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    registry = TopicRegistry(topic_prefix)
    ensure_topics(settings, registry)
    async with AsyncProducer(settings) as producer:
        for i in range(7):
            await producer.produce(registry.name("tasks"), b"{}", key=f"t{i}")
    exporter = GroupLagExporter(settings, pipeline_groups(topic_prefix))
    await asyncio.to_thread(exporter.poll_once)
    group, tasks = f"{topic_prefix}predict", registry.name("tasks")
    assert sample("dspex_consumer_group_lag_messages", group=group, topic=tasks) == 7
    assert sample("dspex_consumer_group_members", group=group) == 0
    scores = registry.name("scores")
    assert sample("dspex_consumer_group_lag_messages", group=f"{topic_prefix}aggregate", topic=scores) == 0


@pytest.mark.kafka
async def test_the_aggregator_metrics_follow_job_statuses(kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    stats = {"counted": 4, "duplicate": 1}
    observed = AggregatorMetrics(
        settings, prefix=topic_prefix, worker_id="agg-test", stats=stats, serve=False
    )
    job = f"{topic_prefix}job"
    running = JobStatus(job_id=job, state="running", total_tasks=8, done=2)
    finished_before = sample("dspex_aggregator_jobs_finished_total", state="failed") or 0.0
    counted_before = sample("dspex_aggregator_scores_total", outcome="counted") or 0.0
    observed.status_sent(encode(running))
    assert sample("dspex_job_progress_ratio", dspex_job=job) == 0.25
    observed.sync()
    assert sample("dspex_aggregator_scores_total", outcome="counted") == counted_before + 4
    failed = running.model_copy(update={"state": "failed", "reason": "x"})
    observed.status_sent(encode(failed))
    assert sample("dspex_job_progress_ratio", dspex_job=job) is None
    assert sample("dspex_aggregator_jobs_finished_total", state="failed") == finished_before + 1
    # the terminal status sent again with late usage (cost truth) does not count the job twice
    observed.status_sent(encode(failed.model_copy(update={"seq": failed.seq + 1})))
    assert sample("dspex_aggregator_jobs_finished_total", state="failed") == finished_before + 1


async def test_lm_requests_latency_tokens_and_429s_are_counted(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with SimulatedLMServer(in_process=True, rate=5.0, burst=1.0) as sim:
        model = f"sim/metrics-{id(sim)}"
        lm = LM(model, api_base=sim.base_url, cache=False, retry_policy=RetryPolicy(base_delay=0.01))
        messages = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(6)]
        with context(callbacks=[PrometheusCallback()]):
            await lm.acall(messages=messages[0])
            assert sample("dspex_lm_requests_total", model=model, outcome="rate_limited") == 0  # pre-created
            await asyncio.gather(*(lm.acall(messages=m) for m in messages[1:]))
        await lm.aclose()
    assert sample("dspex_lm_requests_total", model=model, outcome="ok") == 6
    assert (sample("dspex_lm_requests_total", model=model, outcome="rate_limited") or 0) >= 1
    assert sample("dspex_lm_errors_total", model=model, error="LMRateLimitError") is not None
    assert sample("dspex_lm_request_duration_seconds_count", model=model) == 6
    assert (sample("dspex_lm_tokens_total", model=model, direction="prompt") or 0) > 0
    assert (sample("dspex_circuit_breaker_state", endpoint=lm.api_base)) == 0


@pytest.mark.kafka
def test_an_aggregator_metrics_port_in_use_fails_at_start_naming_it(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        command = [
            sys.executable, "-m", "dspex.cli", "worker", "aggregate", "--bootstrap", kafka_bootstrap,
            "--prefix", topic_prefix, "--data-dir", str(tmp_path), "--metrics-port", str(port),
            "--prometheus-targets-dir", str(tmp_path / "targets"),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"metrics port {port} on 127.0.0.1 is already in use" in result.stderr
