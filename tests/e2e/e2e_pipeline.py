"""What the end-to-end pipeline tests share: real worker processes, a real broker, the simulated LM.

A :class:`Pipeline` is one topic prefix with its `dspex worker ...` processes (``LocalStack``) and a
``dspex.Client``; the simulated LM (a simulation, not a model) runs as its own process per test, so
every test reads its own request counter. Mid-job steps wait for events (the simulated LM's counters
and hold switch, job statuses, heartbeats, consumer-group descriptions), never for fixed sleeps:
:func:`wait_for` re-checks a condition until it holds and names what it waited for when it does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from dspex.client import Client
from dspex.configuration import context
from dspex.dev.stack import LocalStack, WorkerKind, WorkerProcess
from dspex.errors import DspexError, KafkaError
from dspex.evaluate import Evaluate, EvaluationResult
from dspex.lm import LM
from dspex.metrics import metric_from_name
from dspex.modules import ChainOfThought, Predict
from dspex.primitives import Example, Module
from dspex.schemas import JobStatus, WorkerHeartbeat
from dspex.signatures import make_signature
from dspex.streams.admin import KafkaAdmin, ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import MIN_TASK_PARTITIONS, TopicRegistry
from dspex.testing import SimulatedLMServer, arithmetic_dataset

__all__ = [
    "INSTRUCTIONS",
    "JOB_TIMEOUT_S",
    "METRIC",
    "Pipeline",
    "cot_program",
    "devset",
    "local_evaluate",
    "per_example",
    "predict_program",
    "read_topic",
    "sim_lm",
    "sim_report",
    "wait_for",
    "wait_quiet",
]

T = TypeVar("T")

INSTRUCTIONS = "Answer the arithmetic question with a number."
METRIC = "numeric_equal:answer"
READY_TIMEOUT_S = 150.0
JOB_TIMEOUT_S = 240.0
LOG_LINES = 40


def predict_program() -> Module:
    return Predict(make_signature("question -> answer", INSTRUCTIONS))


def cot_program() -> Module:
    return ChainOfThought(make_signature("question -> answer", INSTRUCTIONS))


def devset(n: int, seed: int = 7) -> list[Example]:
    return arithmetic_dataset(n, seed=seed)


def sim_lm(sim: SimulatedLMServer, cache_dir: Path, **options: Any) -> LM:
    """The LM of a test: the simulated LM, cache off (every example answered by the LM).

    Temperature 0 and 1,000 tokens are set, not left to the defaults (DSPy's: none sent): the
    simulated LM's answers depend on the request, and the cases here (seeds, datasets, where a
    worker is killed) were chosen for the answers these requests get."""
    settings: dict[str, Any] = {"temperature": 0.0, "max_tokens": 1000, **options}
    return LM("openai/simulated", api_base=sim.base_url, cache=False, cache_dir=cache_dir, **settings)


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    poll: float = 0.2,
    detail: Callable[[], str] | None = None,
    tolerate: tuple[type[Exception], ...] = (),
) -> T:
    """Re-check ``condition`` until it returns something truthy, and return that.

    AssertionError naming ``what`` (and ``detail()``, e.g. worker logs) after ``timeout`` s.
    Errors of the ``tolerate`` types count as "not yet" (the last one is named on a timeout).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        found = None
        try:
            found = condition()
        except tolerate as exc:
            last_error = exc
        if found:
            return found
        if time.monotonic() > deadline:
            extra = f" (last error: {last_error})" if last_error is not None else ""
            extra += f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(poll)


def wait_quiet(sim: SimulatedLMServer, timeout: float = 60.0) -> dict[str, Any]:
    """Until the simulated LM has nothing in flight and two samples 1 s apart count the same."""
    previous: list[int] = [-1]

    def quiet() -> dict[str, Any] | None:
        stats = sim.control.stats()
        total = int(stats["requests_total"])
        settled = stats["in_flight"] == 0 and total == previous[0]
        previous[0] = total
        return stats if settled else None

    return wait_for(quiet, timeout, "the simulated LM's request counter to stop moving", poll=1.0)


def local_evaluate(program: Module, examples: Sequence[Example], lm: LM) -> EvaluationResult:
    """What local ``Evaluate`` gives for ``program`` on ``examples`` with ``lm``."""
    evaluate = Evaluate(devset=list(examples), metric=metric_from_name(METRIC), concurrency=64)
    with context(lm=lm):
        return evaluate(program)


def per_example(result: EvaluationResult) -> list[tuple[int, float, dict[str, Any] | None, str | None]]:
    """(index, score, outputs, error) of every example of a result, in example order."""
    return [
        (
            record.index,
            record.score,
            None if record.prediction is None else record.prediction.to_dict(),
            record.error,
        )
        for record in sorted(result.records, key=lambda r: r.index)
    ]


def sim_report(sim: SimulatedLMServer) -> str:
    try:
        stats = sim.control.stats()
    except DspexError as exc:  # a report written for a failure: say what went wrong instead
        return f"simulated LM at {sim.base_url}: stats unavailable ({exc})"
    shown = {k: v for k, v in stats.items() if k != "config"}
    return f"simulated LM at {sim.base_url}: {shown}"


def read_topic(settings: KafkaSettings, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the beginning to the current end)."""
    consumer = Consumer({**settings.confluent(), "group.id": "e2e-unused", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in partitions
        }
        wanted = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(wanted)])
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} stalled with partitions {sorted(wanted)} unread")
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                found.append(message)
                if (message.offset() or 0) + 1 >= ends[message.partition() or 0]:
                    wanted.discard(message.partition() or 0)
        return found
    finally:
        consumer.close()


def log_tail(worker: WorkerProcess, lines: int) -> str:
    """The end of a worker's log without per-request access lines and faust's offset tables."""
    kept = [line for line in worker.log_tail(20 * lines).splitlines() if not _noise(line)]
    return "\n".join(kept[-lines:])


def _noise(line: str) -> bool:
    return "httpx: HTTP Request" in line or line.startswith(("|", "+"))


@dataclass
class Pipeline:
    """Worker processes under one topic prefix, and a client to drive them.

    Topics are created before any worker starts (workers and client then agree on their sizes).
    """

    bootstrap: str
    prefix: str
    work_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    settings: KafkaSettings = field(init=False)
    registry: TopicRegistry = field(init=False)
    stack: LocalStack = field(init=False)
    client: Client = field(init=False)

    def __post_init__(self) -> None:
        self.settings = KafkaSettings(bootstrap_servers=self.bootstrap)
        self.registry = TopicRegistry(self.prefix)
        ensure_topics(self.settings, self.registry)
        self.stack = LocalStack(
            bootstrap=self.bootstrap, prefix=self.prefix, work_dir=self.work_dir, env=self.env
        )
        self.client = Client(self.bootstrap, prefix=self.prefix)

    # ------------------------------------------------------------------ topics and groups

    def partitions(self, role: str) -> int:
        name = self.registry.name(role)  # type: ignore[arg-type]
        return KafkaAdmin(self.settings).partition_counts([name])[name]

    def group_assignment(self, kind: WorkerKind) -> list[list[tuple[str, int]]]:
        """The partitions of each member of the kind's consumer group (admin API, not the workers)."""
        group = f"{self.prefix}{kind}"
        admin = AdminClient(self.settings.confluent())
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        return [
            [(tp.topic, tp.partition) for tp in member.assignment.topic_partitions]
            for member in description.members
        ]

    def committed(self, kind: WorkerKind, role: str) -> int:
        """How many records of ``role``'s topic the kind's group has committed (all partitions)."""
        topic = self.registry.name(role)  # type: ignore[arg-type]
        partitions = [(topic, p) for p in range(self.partitions(role))]
        return sum(KafkaAdmin(self.settings).committed(f"{self.prefix}{kind}", partitions).values())

    # ------------------------------------------------------------------ workers

    def start(self, kind: WorkerKind, *args: str) -> WorkerProcess:
        return self.stack.start(kind, *args)

    def start_workers(self, predictors: int, *predictor_args: str) -> None:
        """One aggregator, one scorer and ``predictors`` predictors."""
        self.start("aggregate")
        self.start("score")
        for _ in range(predictors):
            self.start("predict", *predictor_args)

    def heartbeats(self) -> dict[str, WorkerHeartbeat]:
        return {beat.worker_id: beat for beat in self.client.workers()}

    def assigned(self, kind: WorkerKind) -> dict[str, int]:
        """Partitions each LIVE worker of ``kind`` says (in its latest heartbeat) it owns."""
        beats = self.heartbeats()
        return {w.name: beats[w.name].assigned_partitions for w in self.stack.alive(kind) if w.name in beats}

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until live predictors own every tasks partition, the scorer every predictions partition
        (their heartbeats), and the aggregator's group has a member (admin API)."""
        tasks, predictions = self.partitions("tasks"), self.partitions("predictions")
        if tasks < MIN_TASK_PARTITIONS:
            raise AssertionError(f"{self.registry.name('tasks')} has {tasks} partitions, fewer than 8")

        def ready() -> bool:
            self.stack.check_running()
            predict, score = self.assigned("predict"), self.assigned("score")
            if len(predict) < len(self.stack.alive("predict")) or min(predict.values(), default=0) == 0:
                return False
            if sum(predict.values()) != tasks or sum(score.values()) != predictions:
                return False
            return not self.stack.alive("aggregate") or bool(self.group_assignment("aggregate"))

        # KafkaError tolerated: the client's reads of freshly created topics can answer NOT_LEADER
        # for a moment (a product bug reported to the coordinator; KafkaAdmin already retries it).
        wait_for(
            ready,
            timeout,
            "every worker to own partitions",
            poll=0.5,
            detail=self.report,
            tolerate=(KafkaError,),
        )

    def check_running(self) -> None:
        self.stack.check_running()

    # ------------------------------------------------------------------ jobs

    def submit(self, programs: Sequence[Module], examples: Sequence[Example], lm: LM, **options: Any) -> str:
        with context(lm=lm):
            job_id = self.client.evaluate_many(
                list(programs), list(examples), METRIC, wait=False, display_progress=False, **options
            )
        return cast(str, job_id)

    def evaluate(
        self, programs: Sequence[Module], examples: Sequence[Example], lm: LM, **options: Any
    ) -> list[EvaluationResult]:
        options.setdefault("timeout", JOB_TIMEOUT_S)
        with context(lm=lm):
            results = self.client.evaluate_many(
                list(programs), list(examples), METRIC, display_progress=False, **options
            )
        return cast(list[EvaluationResult], results)

    def status(self, job_id: str) -> JobStatus | None:
        return cast(JobStatus | None, self.client.status(job_id))

    def wait_status(self, job_id: str, predicate: Callable[[JobStatus], bool], what: str) -> JobStatus:
        def seen() -> JobStatus | None:
            status = self.status(job_id)
            return status if status is not None and predicate(status) else None

        return wait_for(
            seen,
            JOB_TIMEOUT_S,
            f"job {job_id}: {what}",
            poll=0.25,
            detail=self.report,
            tolerate=(KafkaError,),
        )

    def finish(self, job_id: str) -> JobStatus:
        """The job's terminal status (AssertionError with the worker logs when it does not come)."""
        try:
            status = self.client.wait(job_id, timeout=JOB_TIMEOUT_S)
        except DspexError as exc:
            raise AssertionError(f"job {job_id} did not finish: {exc}\n{self.report()}") from exc
        return cast(JobStatus, status)

    def wait_drained(self, timeout: float = 120.0) -> None:
        """Until the predict and score groups have consumed (and committed) everything."""

        def drained() -> bool:
            lag = self.client.lag()
            return all(kind in lag and lag[kind].total == 0 for kind in ("predict", "score"))

        wait_for(drained, timeout, "predict and score lag to reach 0", poll=0.5, detail=self.report)

    # ------------------------------------------------------------------ reports

    def report(self, lines: int = LOG_LINES) -> str:
        """Every worker's state and the end of its log: what a failure needs to be understood."""
        parts = [f"pipeline {self.prefix} on {self.bootstrap}, logs in {self.work_dir}"]
        for worker in self.stack.workers:
            state = "running" if worker.alive else f"exited {worker.process.returncode}"
            parts.append(f"--- {worker.name} (pid {worker.pid}, {state}) ---\n{log_tail(worker, lines)}")
        return "\n".join(parts)

    def close(self) -> None:
        self.stack.stop_all()
        self.client.close()
