"""Every Prometheus metric dspex exports, and the small functions the rest of the code calls.

One registry per process (prometheus_client's default), served on the worker's /metrics port.
Rules: names start with ``dspex_``, are in base units (seconds, bytes, USD), counters end in
``_total``; labels are bounded (worker ``kind``, consumer ``group``, ``topic``, LM ``model`` and
``endpoint``, an ``outcome``/``reason``/``state`` from a small set). No example or task id is ever a
label; the per-job gauges (``dspex_job_*``, ``dspex_optimizer_best_score_percent``) carry a
``dspex_job`` label (the job id; ``job`` is Prometheus's own) only while that job runs and drop it
when it ends. Label sets that dashboards use are created up front (``prepare_*``) so their series
exist, at 0, before the first event.

Metrics (label sets in braces):

  worker (dspex.processors.common)
    dspex_messages_consumed_total{kind,topic,outcome}  ok | skipped | dead_lettered
    dspex_messages_produced_total{kind,topic}          records a worker produced, acknowledged
    dspex_tasks_in_flight{kind}                        handlers running now
    dspex_handler_duration_seconds{kind}               histogram, handler start -> output acked
    dspex_worker_lm_calls_total{kind,outcome}          LM calls of the programs a worker ran
  consumer runtime (dspex.streams.consumer)
    dspex_consumer_partitions_assigned{group}
    dspex_consumer_partitions_paused{group}            backpressure: paused above the high watermark
    dspex_consumer_max_in_flight{group}                the in-flight bound
    dspex_consumer_outstanding_messages{group}         running handlers plus the local backlog
    dspex_consumer_rebalances_total{group}
    dspex_dlq_records_total{reason}                    dead letters written, by reason code
  producer (dspex.streams.producer)
    dspex_producer_records_total{topic,outcome}        delivered | failed
  librdkafka statistics (statistics.interval.ms, via stats_cb)
    dspex_kafka_consumer_lag_messages{group,topic}     librdkafka's view, summed over its partitions
    dspex_kafka_client_rx_messages_total{role}         role: consumer | producer
    dspex_kafka_client_tx_messages_total{role}
    dspex_kafka_client_queued_messages{role}           messages waiting in librdkafka's queues
  LM calls (recorded from the LM's callback events by dspex.observability.callbacks.PrometheusCallback)
    dspex_lm_requests_total{model,outcome}             ok | retried | rate_limited | error | cache_hit
    dspex_lm_request_duration_seconds{model}           answered calls as the caller waits for them: limiter
                                                       and breaker waits, retries and backoff included
    dspex_lm_attempt_duration_seconds{model,outcome}   one HTTP attempt alone (ok | rate_limited |
                                                       transient | failed)
    dspex_lm_queue_wait_seconds{endpoint}              an attempt's wait for the endpoint's limiter
    dspex_lm_tokens_total{model,direction}             prompt | completion
    dspex_lm_cost_usd_total{model}
    dspex_lm_errors_total{model,error}                 error class of failed attempts (LMServerError, ...)
    dspex_lm_limiter_limit{endpoint}                   the adaptive limiter's current concurrency limit
    dspex_circuit_breaker_state{endpoint}              0 closed, 1 half-open, 2 open
  agent tools (ReActV2's tool calls, recorded by PrometheusCallback's on_tool_* hooks and its
  on_tool_breaker_state hook; ``tool`` is bounded: the first 50 names a process sees, then "other")
    dspex_tool_calls_total{tool,outcome}               ok | error | timeout | cancelled
    dspex_tool_duration_seconds{tool}                  histogram, one call of the tool (one attempt)
    dspex_tool_breaker_state{tool}                     per tool service (the tool's name by default):
                                                       0 closed, 1 half-open, 2 open
  code sandbox (a predictor's --sandbox-pool; executions recorded by PrometheusCallback's
  on_interpreter_execute_* hooks, the pool gauges read from the pool at scrape time)
    dspex_sandbox_executions_total{outcome}            ok | code_error | output | timeout | memory |
                                                       crash | startup | refused | other
    dspex_sandbox_pool_size                            warm sandbox processes the pool keeps
    dspex_sandbox_busy                                 processes leased to running sessions now
    dspex_sandbox_idle                                 warm processes waiting for a session
  aggregator process (dspex.processors.aggregator, dspex.observability.lag)
    dspex_consumer_group_lag_messages{group,topic}     committed vs end offsets, through the admin API
    dspex_consumer_group_members{group}                live members of the group
    dspex_aggregator_jobs_running
    dspex_aggregator_jobs_finished_total{state}        completed | failed | cancelled
    dspex_aggregator_scores_total{outcome}             counted | duplicate | ignored | undecodable
    dspex_job_progress_ratio{dspex_job}                done / total of a running job
    dspex_job_tasks_done{dspex_job}
    dspex_job_cost_usd{dspex_job}
  optimizer (defined for the optimizer coordinator)
    dspex_optimizer_steps_total{optimizer}
    dspex_optimizer_best_score_percent{dspex_job}

The programming model (dspex.lm, modules, adapters) imports nothing from here: the LM series are
written by a callback the workers install.

    >>> lm_request("openai/gpt-4o-mini", "ok")
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

__all__ = [
    "BREAKER_STATES",
    "CONSUME_OUTCOMES",
    "DLQ_REASON_OTHER",
    "HANDLER_DURATION",
    "JOB_FINAL_STATES",
    "JOB_LABEL",
    "LM_ATTEMPT_OUTCOMES",
    "LM_CALLS",
    "LM_LATENCY_BUCKETS",
    "LM_OUTCOMES",
    "MESSAGES_CONSUMED",
    "MESSAGES_PRODUCED",
    "SANDBOX_OUTCOMES",
    "SCORE_OUTCOMES",
    "TASKS_IN_FLIGHT",
    "TASKS_WINDOW",
    "TOOL_LABEL_OTHER",
    "TOOL_OUTCOMES",
    "ConsumeOutcome",
    "LMOutcome",
    "LMSeries",
    "SandboxOutcome",
    "ToolCallOutcome",
    "aggregator_scores",
    "child",
    "consumer_assignment",
    "consumer_outstanding",
    "consumer_rebalanced",
    "dead_lettered",
    "group_lag",
    "group_members",
    "job_ended",
    "job_progress",
    "kafka_client_stats",
    "lm_attempt",
    "lm_cost",
    "lm_endpoint",
    "lm_error",
    "lm_latency",
    "lm_model",
    "lm_queue_wait",
    "lm_request",
    "lm_tokens",
    "optimizer_best_score",
    "optimizer_ended",
    "optimizer_step",
    "prepare_aggregator",
    "prepare_consumer",
    "prepare_dlq",
    "prepare_worker",
    "producer_delivery",
    "running_jobs",
    "sandbox_execution",
    "sandbox_pool_gauges",
    "set_breaker_state",
    "set_limiter_limit",
    "set_tool_breaker_state",
    "tool_call",
    "tool_label",
]

# The *_created companion series double every counter and histogram; nothing reads them, and
# promtool wants counters to look like counters.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

ConsumeOutcome = Literal["ok", "skipped", "dead_lettered"]
CONSUME_OUTCOMES: Final = ("ok", "skipped", "dead_lettered")
LMOutcome = Literal["ok", "retried", "rate_limited", "error", "cache_hit"]
LM_OUTCOMES: Final = ("ok", "retried", "rate_limited", "error", "cache_hit")
LM_ATTEMPT_OUTCOMES: Final = ("ok", "rate_limited", "transient", "failed")  # dspex.lm.events.AttemptOutcome
TOKEN_DIRECTIONS: Final = ("prompt", "completion")
# code_error: the code raised or did not parse (the session lives); output: it printed past the
# limit; timeout, memory, crash, startup: the session was lost (dspex.sandbox.errors kinds);
# refused: a worker without --sandbox-pool was asked for an interpreter.
SandboxOutcome = Literal[
    "ok", "code_error", "output", "timeout", "memory", "crash", "startup", "refused", "other"
]
SANDBOX_OUTCOMES: Final = (
    "ok", "code_error", "output", "timeout", "memory", "crash", "startup", "refused", "other"
)  # fmt: skip
JOB_FINAL_STATES: Final = ("completed", "failed", "cancelled")
SCORE_OUTCOMES: Final = ("counted", "duplicate", "ignored", "undecodable")
BREAKER_STATES: Final = {"closed": 0, "half_open": 1, "open": 2}
KAFKA_ROLES: Final = ("consumer", "producer")
DLQ_REASON_OTHER: Final = "other"
# Not "job": Prometheus gives every scraped series a "job" label (the scrape job) and would rename
# ours to "exported_job".
JOB_LABEL: Final = "dspex_job"
_MAX_DLQ_REASONS = 32  # reasons are code constants; past this many, a bug is making them up
# timeout: the tool raised TimeoutError; cancelled: the call was cut off from outside (the tool
# runner's policy timeout cancels an overrunning call, so most of these are timeouts).
ToolCallOutcome = Literal["ok", "error", "timeout", "cancelled"]
TOOL_OUTCOMES: Final = ("ok", "error", "timeout", "cancelled")
TOOL_LABEL_OTHER: Final = "other"
# Tool names come from programs (and MCP servers): a process keeps the first this many as labels.
MAX_TOOL_LABELS: Final = 50
_TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
LM_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 45, 60)
# Most attempts get a slot at once: the low buckets tell "no wait" from "a little".
_QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
_HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# ----------------------------------------------------------------------------- worker

MESSAGES_CONSUMED: Final = Counter(
    "dspex_messages_consumed_total",
    "Messages a worker finished with, by input topic and outcome (ok, skipped, dead_lettered).",
    ["kind", "topic", "outcome"],
)
MESSAGES_PRODUCED: Final = Counter(
    "dspex_messages_produced_total",
    "Records a worker produced and the broker acknowledged, by topic.",
    ["kind", "topic"],
)
TASKS_IN_FLIGHT: Final = Gauge(
    "dspex_tasks_in_flight", "Handlers of a worker running now (LM calls waiting included).", ["kind"]
)
TASKS_WINDOW: Final = Gauge(
    "dspex_tasks_window",
    "Tasks a predictor lets run at once now: the least of --concurrency, what its event loop can "
    "serve and its LM limits plus headroom (dspex_lm_limiter_limit alone can read higher).",
    ["kind"],
)
HANDLER_DURATION: Final = Histogram(
    "dspex_handler_duration_seconds",
    "Time from a message's handler starting to its output being acknowledged.",
    ["kind"],
    buckets=_HANDLER_BUCKETS,
)
LM_CALLS: Final = Counter(
    "dspex_worker_lm_calls",
    "LM calls made by the programs a worker ran, by outcome (ok, cache_hit, or the error kind).",
    ["kind", "outcome"],
)

# ----------------------------------------------------------------------------- consumer runtime

_PARTITIONS_ASSIGNED = Gauge(
    "dspex_consumer_partitions_assigned", "Partitions this consumer-group member owns.", ["group"]
)
_PARTITIONS_PAUSED = Gauge(
    "dspex_consumer_partitions_paused", "Partitions paused for backpressure (high watermark).", ["group"]
)
_MAX_IN_FLIGHT = Gauge("dspex_consumer_max_in_flight", "The consumer's bound on running handlers.", ["group"])
_OUTSTANDING = Gauge(
    "dspex_consumer_outstanding_messages", "Messages received and not done: running plus backlog.", ["group"]
)
_REBALANCES = Counter("dspex_consumer_rebalances", "Partition assignments and revocations.", ["group"])
_DLQ_RECORDS = Counter("dspex_dlq_records", "Dead letters written, by reason code.", ["reason"])
_PRODUCED = Counter(
    "dspex_producer_records", "Records the producer finished, by topic and outcome.", ["topic", "outcome"]
)

# ----------------------------------------------------------------------------- librdkafka statistics

_KAFKA_LAG = Gauge(
    "dspex_kafka_consumer_lag_messages",
    "librdkafka's consumer lag of this member, summed over its partitions of a topic.",
    ["group", "topic"],
)
_KAFKA_RX = Counter(
    "dspex_kafka_client_rx_messages", "Messages received from brokers (librdkafka).", ["role"]
)
_KAFKA_TX = Counter("dspex_kafka_client_tx_messages", "Messages sent to brokers (librdkafka).", ["role"])
_KAFKA_QUEUED = Gauge(
    "dspex_kafka_client_queued_messages", "Messages in librdkafka's local queues.", ["role"]
)

# ----------------------------------------------------------------------------- LM client

_LM_REQUESTS = Counter(
    "dspex_lm_requests",
    "LM requests by model and outcome: ok, retried (transient failure, retried), rate_limited "
    "(429), error (the call failed), cache_hit.",
    ["model", "outcome"],
)
_LM_LATENCY = Histogram(
    "dspex_lm_request_duration_seconds",
    "Duration of answered LM calls as the caller waits for them: from the call's start to its answer, "
    "with the waits for the endpoint's concurrency limiter and circuit breaker, every attempt, retries "
    "and their backoff; cache hits and failed calls excluded. The HTTP attempt alone is "
    "dspex_lm_attempt_duration_seconds, the limiter wait dspex_lm_queue_wait_seconds.",
    ["model"],
    buckets=LM_LATENCY_BUCKETS,
)
_LM_ATTEMPT = Histogram(
    "dspex_lm_attempt_duration_seconds",
    "Duration of one HTTP attempt of an LM call alone (request sent to answer read, no queueing), by "
    "outcome: ok, rate_limited (429), transient (timeout, connection failure, 5xx), failed.",
    ["model", "outcome"],
    buckets=LM_LATENCY_BUCKETS,
)
_LM_QUEUE_WAIT = Histogram(
    "dspex_lm_queue_wait_seconds",
    "Time an LM attempt waited for the endpoint's adaptive concurrency limiter (and its rate caps) "
    "before its request was sent.",
    ["endpoint"],
    buckets=_QUEUE_WAIT_BUCKETS,
)
_LM_TOKENS = Counter(
    "dspex_lm_tokens", "Tokens by model and direction (prompt, completion).", ["model", "direction"]
)
_LM_COST = Counter("dspex_lm_cost_usd", "Cost of LM calls in US dollars (price table).", ["model"])
_LM_ERRORS = Counter("dspex_lm_errors", "Failed LM attempts by error class.", ["model", "error"])
_LIMITER_LIMIT = Gauge(
    "dspex_lm_limiter_limit",
    "The adaptive limiter's current concurrency limit per LM endpoint.",
    ["endpoint"],
)
_BREAKER_STATE = Gauge(
    "dspex_circuit_breaker_state",
    "Circuit breaker per LM endpoint: 0 closed, 1 half-open, 2 open.",
    ["endpoint"],
)

# ----------------------------------------------------------------------------- agent tools

_TOOL_CALLS = Counter(
    "dspex_tool_calls",
    "Tool calls of agents (ReActV2), by tool and outcome (ok, error, timeout, cancelled).",
    ["tool", "outcome"],
)
_TOOL_DURATION = Histogram(
    "dspex_tool_duration_seconds",
    "Duration of one tool call (one attempt: retries are separate calls), by tool.",
    ["tool"],
    buckets=_TOOL_BUCKETS,
)
_TOOL_BREAKER_STATE = Gauge(
    "dspex_tool_breaker_state",
    "Circuit breaker per tool service (the tool's name unless its policy names a service): "
    "0 closed, 1 half-open, 2 open.",
    ["tool"],
)

# ----------------------------------------------------------------------------- code sandbox

_SANDBOX_EXECUTIONS = Counter(
    "dspex_sandbox_executions", "Sandbox code executions by outcome (failure kinds included).", ["outcome"]
)
_SANDBOX_POOL_SIZE = Gauge("dspex_sandbox_pool_size", "Warm sandbox processes the pool keeps.")
_SANDBOX_BUSY = Gauge("dspex_sandbox_busy", "Sandbox processes leased to running sessions now.")
_SANDBOX_IDLE = Gauge("dspex_sandbox_idle", "Warm sandbox processes waiting for a session.")

# ----------------------------------------------------------------------------- aggregator process

_GROUP_LAG = Gauge(
    "dspex_consumer_group_lag_messages",
    "Committed versus end offsets of a consumer group on a topic (admin API; alive members or not).",
    ["group", "topic"],
)
_GROUP_MEMBERS = Gauge("dspex_consumer_group_members", "Live members of a consumer group.", ["group"])
_JOBS_RUNNING = Gauge("dspex_aggregator_jobs_running", "Evaluation jobs this aggregator reports as running.")
_JOBS_FINISHED = Counter(
    "dspex_aggregator_jobs_finished", "Jobs that reached a terminal state here, by state.", ["state"]
)
_SCORES = Counter(
    "dspex_aggregator_scores",
    "Scores the aggregator read, by outcome (counted, duplicate, ignored, undecodable).",
    ["outcome"],
)
_JOB_PROGRESS = Gauge("dspex_job_progress_ratio", "Done / total tasks of a running job.", [JOB_LABEL])
_JOB_DONE = Gauge("dspex_job_tasks_done", "Tasks accounted of a running job.", [JOB_LABEL])
_JOB_COST = Gauge("dspex_job_cost_usd", "LM cost so far of a running job, US dollars.", [JOB_LABEL])

# ----------------------------------------------------------------------------- optimizer

_OPT_STEPS = Counter("dspex_optimizer_steps", "Optimization steps completed.", ["optimizer"])
_OPT_BEST = Gauge(
    "dspex_optimizer_best_score_percent", "Best score so far of a running optimization.", [JOB_LABEL]
)

_lock = threading.Lock()
_dlq_reasons: set[str] = set()
_tool_labels: set[str] = set()
_running_jobs: set[str] = set()
_children: dict[tuple[int, tuple[str, ...]], Any] = {}  # (metric id, label values) -> child
_stats_seen: dict[tuple[str, str], tuple[int, int]] = {}  # (role, client name) -> last (rxmsgs, txmsgs)


# ----------------------------------------------------------------------------- preparing series


def prepare_worker(kind: str, consumed: Iterable[str], produced: Iterable[str]) -> None:
    """Create a worker's series at 0: every outcome of its input topics, its output topics."""
    for topic in consumed:
        for outcome in CONSUME_OUTCOMES:
            MESSAGES_CONSUMED.labels(kind=kind, topic=topic, outcome=outcome)
    for topic in produced:
        MESSAGES_PRODUCED.labels(kind=kind, topic=topic)
    TASKS_IN_FLIGHT.labels(kind=kind)
    HANDLER_DURATION.labels(kind=kind)


def prepare_consumer(group: str, topics: Iterable[str], max_in_flight: int) -> None:
    """Create a consumer-group member's series (partition gauges at 0, its bound)."""
    _PARTITIONS_ASSIGNED.labels(group=group).set(0)
    _PARTITIONS_PAUSED.labels(group=group).set(0)
    _OUTSTANDING.labels(group=group).set(0)
    _MAX_IN_FLIGHT.labels(group=group).set(max_in_flight)
    _REBALANCES.labels(group=group)
    for topic in topics:
        _KAFKA_LAG.labels(group=group, topic=topic)
    for role in KAFKA_ROLES:
        _KAFKA_RX.labels(role=role)
        _KAFKA_TX.labels(role=role)
        _KAFKA_QUEUED.labels(role=role)


def prepare_dlq(reasons: Iterable[str]) -> None:
    """Create the DLQ counter of each known reason at 0."""
    for reason in reasons:
        _dlq_reason(reason)


def prepare_aggregator(groups: Iterable[tuple[str, Iterable[str]]]) -> None:
    """Create the aggregator process's series: lag per (group, topic), members, job counters."""
    for group, topics in groups:
        _GROUP_MEMBERS.labels(group=group)
        for topic in topics:
            _GROUP_LAG.labels(group=group, topic=topic)
    for state in JOB_FINAL_STATES:
        _JOBS_FINISHED.labels(state=state)
    for outcome in SCORE_OUTCOMES:
        _SCORES.labels(outcome=outcome)
    _JOBS_RUNNING.set(0)


def lm_model(model: str) -> None:
    """Create an LM model's series at 0 (called when an LM client is built)."""
    for outcome in LM_OUTCOMES:
        _LM_REQUESTS.labels(model=model, outcome=outcome)
    for direction in TOKEN_DIRECTIONS:
        _LM_TOKENS.labels(model=model, direction=direction)
    _LM_COST.labels(model=model)
    _LM_LATENCY.labels(model=model)
    for outcome in LM_ATTEMPT_OUTCOMES:
        _LM_ATTEMPT.labels(model=model, outcome=outcome)


class LMSeries:
    """The series of one LM model at one endpoint, created at 0 and looked up once: every LM call
    writes several of them (:class:`~dspex.observability.callbacks.PrometheusCallback` keeps these)."""

    __slots__ = (
        "attempts",
        "completion_tokens",
        "cost",
        "latency",
        "prompt_tokens",
        "queue_wait",
        "requests",
    )

    def __init__(self, model: str, endpoint: str) -> None:
        lm_model(model)
        lm_endpoint(endpoint)
        self.requests = {outcome: child(_LM_REQUESTS, model, outcome) for outcome in LM_OUTCOMES}
        self.attempts = {outcome: child(_LM_ATTEMPT, model, outcome) for outcome in LM_ATTEMPT_OUTCOMES}
        self.latency = child(_LM_LATENCY, model)
        self.prompt_tokens = child(_LM_TOKENS, model, "prompt")
        self.completion_tokens = child(_LM_TOKENS, model, "completion")
        self.cost = child(_LM_COST, model)
        self.queue_wait = child(_LM_QUEUE_WAIT, endpoint)


def lm_endpoint(endpoint: str) -> None:
    """Create an endpoint's series: queue wait, and the breaker closed until one says otherwise."""
    _LM_QUEUE_WAIT.labels(endpoint=endpoint)
    with _lock:
        if (endpoint,) not in _BREAKER_STATE._metrics:
            _BREAKER_STATE.labels(endpoint=endpoint).set(BREAKER_STATES["closed"])


# ----------------------------------------------------------------------------- events


def consumer_assignment(group: str, assigned: int, paused: int) -> None:
    """How many partitions a member owns and how many of them are paused now."""
    _PARTITIONS_ASSIGNED.labels(group=group).set(assigned)
    _PARTITIONS_PAUSED.labels(group=group).set(paused)


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once: per-message paths call this thousands of times a
    second. Only for series that are never removed (per-job gauges are; they use ``labels``)."""
    key = (id(metric), values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found


def consumer_outstanding(group: str, outstanding: int) -> None:
    """Messages received by a member and not done yet."""
    child(_OUTSTANDING, group).set(outstanding)


def consumer_rebalanced(group: str) -> None:
    """A member got or gave up partitions."""
    _REBALANCES.labels(group=group).inc()


def dead_lettered(reason: str) -> None:
    """One dead letter written."""
    _dlq_reason(reason).inc()


def producer_delivery(topic: str, delivered: bool) -> None:
    """The broker acknowledged a record (or the producer gave up on it)."""
    child(_PRODUCED, topic, "delivered" if delivered else "failed").inc()


def kafka_client_stats(role: str, stats: dict[str, object], *, group: str | None = None) -> None:
    """Export a few of librdkafka's statistics (a parsed stats_cb JSON document)."""
    key = (role, str(stats.get("name")))
    rx, tx = _int(stats.get("rxmsgs")), _int(stats.get("txmsgs"))
    with _lock:
        last_rx, last_tx = _stats_seen.get(key, (0, 0))
        _stats_seen[key] = (rx, tx)
    # librdkafka's counters are cumulative per client: add what grew since the last document.
    _KAFKA_RX.labels(role=role).inc(max(rx - last_rx, 0))
    _KAFKA_TX.labels(role=role).inc(max(tx - last_tx, 0))
    _KAFKA_QUEUED.labels(role=role).set(_int(stats.get("msg_cnt")))
    if group is not None:
        for topic, lag in _librdkafka_lag(stats).items():
            _KAFKA_LAG.labels(group=group, topic=topic).set(lag)


def lm_request(model: str, outcome: LMOutcome) -> None:
    """One LM request (or cache hit) and how it went."""
    child(_LM_REQUESTS, model, outcome).inc()


def lm_latency(model: str, seconds: float) -> None:
    """How long an answered LM call took."""
    child(_LM_LATENCY, model).observe(seconds)


def lm_attempt(model: str, outcome: str, seconds: float) -> None:
    """How long one HTTP attempt took, by how it ended (:data:`LM_ATTEMPT_OUTCOMES`)."""
    child(_LM_ATTEMPT, model, outcome).observe(seconds)


def lm_queue_wait(endpoint: str, seconds: float) -> None:
    """How long an attempt waited for the endpoint's concurrency limiter."""
    child(_LM_QUEUE_WAIT, endpoint).observe(seconds)


def lm_tokens(model: str, prompt: int, completion: int) -> None:
    """Tokens an LM call used."""
    child(_LM_TOKENS, model, "prompt").inc(prompt)
    child(_LM_TOKENS, model, "completion").inc(completion)


def lm_cost(model: str, usd: float) -> None:
    """What an LM call cost."""
    child(_LM_COST, model).inc(usd)


def lm_error(model: str, error: str) -> None:
    """A failed LM attempt, by its error class name (a small, fixed set of dspex classes)."""
    child(_LM_ERRORS, model, error).inc()


def set_limiter_limit(endpoint: str, limit: float) -> None:
    """The adaptive limiter's limit for ``endpoint`` now (every LM attempt reports it; the gauge is
    written only when it changed, under the lock so that the last writer's value is the gauge's)."""
    if _limiter_limits.get(endpoint) == limit:
        return
    with _lock:
        _limiter_limits[endpoint] = limit
        child(_LIMITER_LIMIT, endpoint).set(limit)


# The limit each endpoint's gauge was last set to: most attempts leave the limit where it was.
_limiter_limits: dict[str, float] = {}


def set_breaker_state(endpoint: str, state: Literal["closed", "half_open", "open"]) -> None:
    """The circuit breaker's state for ``endpoint`` now."""
    _BREAKER_STATE.labels(endpoint=endpoint).set(BREAKER_STATES[state])


def tool_label(name: str) -> str:
    """The ``tool`` label of a tool (or tool service) called ``name``: itself for the first
    :data:`MAX_TOOL_LABELS` names this process sees, then ``"other"`` (the label stays bounded)."""
    if name in _tool_labels:
        return name
    with _lock:
        if len(_tool_labels) >= MAX_TOOL_LABELS:
            return TOOL_LABEL_OTHER
        _tool_labels.add(name)
    return name


def tool_call(tool: str, outcome: ToolCallOutcome, seconds: float) -> None:
    """One call of ``tool`` (a bounded label, see :func:`tool_label`) ended with ``outcome``."""
    child(_TOOL_CALLS, tool, outcome).inc()
    child(_TOOL_DURATION, tool).observe(seconds)


def set_tool_breaker_state(tool: str, state: Literal["closed", "half_open", "open"]) -> None:
    """The circuit breaker of the tool service ``tool`` (a bounded label) is in ``state`` now."""
    child(_TOOL_BREAKER_STATE, tool).set(BREAKER_STATES[state])


def sandbox_execution(outcome: SandboxOutcome) -> None:
    """One sandbox execution ended with ``outcome``."""
    child(_SANDBOX_EXECUTIONS, outcome).inc()


def sandbox_pool_gauges(stats: Callable[[], Mapping[str, int]]) -> None:
    """Read the pool gauges from ``stats`` (a pool's ``stats``) at every scrape; outcomes at 0."""
    for outcome in SANDBOX_OUTCOMES:
        child(_SANDBOX_EXECUTIONS, outcome)
    _SANDBOX_POOL_SIZE.set_function(lambda: stats().get("size", 0))
    _SANDBOX_BUSY.set_function(lambda: stats().get("active", 0))
    _SANDBOX_IDLE.set_function(lambda: stats().get("idle", 0))


def group_lag(group: str, topic: str, lag: int) -> None:
    """A consumer group's lag on a topic (committed versus end offsets)."""
    _GROUP_LAG.labels(group=group, topic=topic).set(lag)


def group_members(group: str, members: int) -> None:
    """How many members a consumer group has now."""
    _GROUP_MEMBERS.labels(group=group).set(members)


def aggregator_scores(outcome: str, count: int = 1) -> None:
    """Scores the aggregator read, by outcome."""
    _SCORES.labels(outcome=outcome).inc(count)


def job_progress(job_id: str, *, done: int, total: int, cost_usd: float) -> None:
    """A running job's progress: sets its per-job gauges (removed again by :func:`job_ended`)."""
    _JOB_PROGRESS.labels(**{JOB_LABEL: job_id}).set(done / total if total else 0.0)
    _JOB_DONE.labels(**{JOB_LABEL: job_id}).set(done)
    _JOB_COST.labels(**{JOB_LABEL: job_id}).set(cost_usd)
    with _lock:
        _running_jobs.add(job_id)
        _JOBS_RUNNING.set(len(_running_jobs))


def job_ended(job_id: str, state: str | None) -> None:
    """A job is over here (``state`` terminal: counted) or moved away (``state`` None): drop its series."""
    with _lock:
        was_running = job_id in _running_jobs
        _running_jobs.discard(job_id)
        _JOBS_RUNNING.set(len(_running_jobs))
    for gauge in (_JOB_PROGRESS, _JOB_DONE, _JOB_COST):
        if was_running:
            gauge.remove(job_id)
    if state in JOB_FINAL_STATES:
        _JOBS_FINISHED.labels(state=state).inc()


def running_jobs() -> set[str]:
    """Jobs that have per-job series now."""
    with _lock:
        return set(_running_jobs)


def optimizer_step(optimizer: str) -> None:
    """An optimizer finished a step."""
    _OPT_STEPS.labels(optimizer=optimizer).inc()


def optimizer_best_score(job_id: str, score: float) -> None:
    """The best score (0-100) of a running optimization so far."""
    _OPT_BEST.labels(**{JOB_LABEL: job_id}).set(score)


def optimizer_ended(job_id: str) -> None:
    """An optimization is over: drop its per-job series."""
    if (job_id,) in _OPT_BEST._metrics:
        _OPT_BEST.remove(job_id)


# ----------------------------------------------------------------------------- helpers


def _dlq_reason(reason: str) -> Counter:
    with _lock:
        if reason not in _dlq_reasons and len(_dlq_reasons) >= _MAX_DLQ_REASONS:
            reason = DLQ_REASON_OTHER
        _dlq_reasons.add(reason)
    return _DLQ_RECORDS.labels(reason=reason)


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _librdkafka_lag(stats: dict[str, object]) -> dict[str, int]:
    """Sum of librdkafka's consumer_lag over the partitions it fetches, per topic (-1 = unknown)."""
    totals: dict[str, int] = {}
    topics = stats.get("topics")
    if not isinstance(topics, dict):
        return totals
    for name, topic in topics.items():
        partitions = topic.get("partitions") if isinstance(topic, dict) else None
        if not isinstance(partitions, dict):
            continue
        lags = [
            _int(p.get("consumer_lag"))
            for key, p in partitions.items()
            if key != "-1" and isinstance(p, dict)
        ]
        totals[str(name)] = sum(lag for lag in lags if lag > 0)
    return totals
