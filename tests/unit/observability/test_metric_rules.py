"""The metric naming and labelling rules hold for every dspex metric, and series exist up front."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

from dspex.observability import metrics

# A label whose value would be an id of one example, task or candidate: never allowed.
ID_LIKE = re.compile(r"(^|_)(id|ids|task|example|index|candidate|key|offset)($|_)")
PER_JOB = {"dspex_job_progress_ratio", "dspex_job_tasks_done", "dspex_job_cost_usd"}
PER_JOB |= {"dspex_optimizer_best_score_percent"}
UNITS = ("_total", "_seconds", "_bytes", "_usd", "_ratio", "_messages", "_percent")


def dspex_metrics() -> list[Metric]:
    return [m for m in REGISTRY.collect() if m.name.startswith("dspex_")]


def labels_of(metric: Metric) -> set[str]:
    names: set[str] = set()
    for sample in metric.samples:
        names |= set(sample.labels) - {"le"}
    return names


def test_every_metric_the_issue_lists_is_defined() -> None:
    names = {m.name for m in dspex_metrics()}
    wanted = {
        "dspex_messages_consumed", "dspex_messages_produced", "dspex_tasks_in_flight",
        "dspex_consumer_partitions_paused", "dspex_handler_duration_seconds", "dspex_lm_requests",
        "dspex_lm_request_duration_seconds", "dspex_lm_tokens", "dspex_lm_cost_usd",
        "dspex_lm_limiter_limit", "dspex_circuit_breaker_state", "dspex_dlq_records",
        "dspex_consumer_group_lag_messages", "dspex_kafka_consumer_lag_messages",
        "dspex_aggregator_jobs_running", "dspex_aggregator_jobs_finished", "dspex_aggregator_scores",
        "dspex_optimizer_steps", "dspex_optimizer_best_score_percent", "dspex_job_progress_ratio",
    }  # fmt: skip
    assert wanted <= names, sorted(wanted - names)


def test_counters_end_in_total_and_names_carry_units_or_counts() -> None:
    for metric in dspex_metrics():
        if metric.type == "counter":
            assert all(s.name.endswith("_total") for s in metric.samples), metric.name
        else:
            assert not metric.name.endswith("_total"), metric.name


def test_no_label_is_an_id_and_only_per_job_gauges_have_a_job_label() -> None:
    for metric in dspex_metrics():
        labels = labels_of(metric)
        assert not {label for label in labels if ID_LIKE.search(label)}, (metric.name, labels)
        assert "job" not in labels, metric.name  # Prometheus's own target label
        if metrics.JOB_LABEL in labels:
            assert metric.name in PER_JOB and metric.type == "gauge", metric.name


def test_histogram_of_lm_latency_reaches_60_seconds() -> None:
    assert max(metrics.LM_LATENCY_BUCKETS) == 60


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_prepared_series_exist_at_zero_before_any_event() -> None:
    metrics.prepare_worker("unit-kind", ["unit.tasks"], ["unit.predictions"])
    metrics.prepare_consumer("unit.predict", ["unit.tasks"], 64)
    metrics.prepare_dlq(["unit_reason"])
    metrics.lm_model("unit/model")
    metrics.lm_endpoint("http://unit.invalid/v1")
    for outcome in metrics.CONSUME_OUTCOMES:
        labels = {"kind": "unit-kind", "topic": "unit.tasks", "outcome": outcome}
        assert value("dspex_messages_consumed_total", **labels) == 0
    for outcome in metrics.LM_OUTCOMES:
        assert value("dspex_lm_requests_total", model="unit/model", outcome=outcome) == 0
    assert value("dspex_consumer_partitions_paused", group="unit.predict") == 0
    assert value("dspex_consumer_max_in_flight", group="unit.predict") == 64
    assert value("dspex_dlq_records_total", reason="unit_reason") == 0
    assert value("dspex_circuit_breaker_state", endpoint="http://unit.invalid/v1") == 0
    assert value("dspex_lm_request_duration_seconds_count", model="unit/model") == 0


def test_a_breaker_state_set_before_the_endpoint_is_seen_is_kept() -> None:
    metrics.set_breaker_state("http://open.invalid/v1", "open")
    metrics.lm_endpoint("http://open.invalid/v1")
    assert value("dspex_circuit_breaker_state", endpoint="http://open.invalid/v1") == 2


def test_per_job_gauges_exist_only_while_the_job_runs() -> None:
    before = value("dspex_aggregator_jobs_finished_total", state="completed") or 0.0
    metrics.job_progress("job-unit-1", done=5, total=20, cost_usd=0.5)
    assert value("dspex_job_progress_ratio", dspex_job="job-unit-1") == 0.25
    assert "job-unit-1" in metrics.running_jobs()
    metrics.job_ended("job-unit-1", "completed")
    assert value("dspex_job_progress_ratio", dspex_job="job-unit-1") is None
    assert value("dspex_job_tasks_done", dspex_job="job-unit-1") is None
    assert value("dspex_aggregator_jobs_finished_total", state="completed") == before + 1


def test_optimizer_best_score_is_dropped_when_it_ends() -> None:
    metrics.optimizer_best_score("opt-unit", 71.5)
    assert value("dspex_optimizer_best_score_percent", dspex_job="opt-unit") == 71.5
    metrics.optimizer_ended("opt-unit")
    assert value("dspex_optimizer_best_score_percent", dspex_job="opt-unit") is None


def test_dlq_reasons_are_bounded() -> None:
    for i in range(60):
        metrics.dead_lettered(f"made_up_{i}")
    reasons = {
        s.labels["reason"] for m in dspex_metrics() if m.name == "dspex_dlq_records" for s in m.samples
    }
    assert len(reasons) <= 33 and metrics.DLQ_REASON_OTHER in reasons


def test_librdkafka_statistics_become_lag_per_topic_and_message_deltas() -> None:
    document = {
        "name": "unit#consumer-1",
        "rxmsgs": 10,
        "txmsgs": 0,
        "msg_cnt": 3,
        "topics": {
            "unit.stats": {
                "partitions": {
                    "0": {"consumer_lag": 4},
                    "1": {"consumer_lag": -1},  # unknown yet
                    "2": {"consumer_lag": 6},
                    "-1": {"consumer_lag": 100},  # librdkafka's internal UA partition
                }
            }
        },
    }
    rx_before = value("dspex_kafka_client_rx_messages_total", role="consumer") or 0.0
    metrics.kafka_client_stats("consumer", json.loads(json.dumps(document)), group="unit.stats-group")
    metrics.kafka_client_stats("consumer", {**document, "rxmsgs": 15}, group="unit.stats-group")
    assert value("dspex_kafka_consumer_lag_messages", group="unit.stats-group", topic="unit.stats") == 10
    assert value("dspex_kafka_client_rx_messages_total", role="consumer") == rx_before + 15
    assert value("dspex_kafka_client_queued_messages", role="consumer") == 3
