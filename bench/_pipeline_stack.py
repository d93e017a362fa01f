"""The pipeline under benchmark: a broker of its own, worker processes, readiness, CPU and memory probes.

Private helper of ``bench/pipeline_throughput.py`` (``run_all.py`` skips ``_*.py`` files).
Everything started here is stopped by :meth:`BenchStack.close`, also after a failure.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from common import free_port
from confluent_kafka.admin import AdminClient

from dspex.client import Client
from dspex.dev.broker import DevBroker
from dspex.dev.stack import LocalStack, WorkerKind
from dspex.errors import KafkaError
from dspex.streams.admin import KafkaAdmin, ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry

__all__ = ["BenchStack", "CpuWindow", "Sampler", "cpu_s", "machine_busy_s", "progress"]

READY_TIMEOUT_S = 180.0
_IN_FLIGHT = re.compile(r'^dspex_tasks_in_flight\{kind="predict"\}\s+([0-9.e+]+)', re.MULTILINE)


def progress(message: str) -> None:
    """A progress line on stderr (stdout is the markdown section)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 when it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


@dataclass
class BenchStack:
    """A dev broker on a free port (tmp data dir), topics, and 1 aggregator, 1 scorer, N predictors."""

    work_dir: Path
    prefix: str = "bench."
    broker: DevBroker = field(init=False)
    stack: LocalStack = field(init=False)
    client: Client | None = None

    def __post_init__(self) -> None:
        self.broker = DevBroker(port=free_port(), data_dir=self.work_dir / "broker", startup_timeout=120.0)
        self.stack = LocalStack(self.broker.bootstrap, self.prefix, self.work_dir / "workers")

    @property
    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.broker.bootstrap)

    def start(self, predictors: int, predictor_args: list[str]) -> None:
        """Broker, topics, then the workers (topics first so every process agrees on their sizes)."""
        self.broker.start()
        progress(f"broker {self.broker.bootstrap} (pid {self.broker_pid})")
        ensure_topics(self.settings, TopicRegistry(self.prefix))
        self.stack.start("aggregate")
        self.stack.start("score")
        for _ in range(predictors):
            self.stack.start("predict", *predictor_args)
        self.client = Client(self.broker.bootstrap, prefix=self.prefix)

    @property
    def broker_pid(self) -> int:
        pid = self.broker.status().pid
        if pid is None:
            raise RuntimeError(f"the broker {self.broker.bootstrap} has no pid; log: {self.broker.log_file}")
        return pid

    @property
    def bench_client(self) -> Client:
        if self.client is None:
            raise RuntimeError("the stack is not started")
        return self.client

    def pids(self, kind: WorkerKind) -> list[int]:
        return [w.pid for w in self.stack.workers if w.kind == kind]

    # ------------------------------------------------------------------ readiness

    def wait_ready(self) -> None:
        """Until predictors own every tasks partition and the scorer every predictions partition (their
        heartbeats), and the aggregator's consumer group has a member (admin API)."""
        registry = TopicRegistry(self.prefix)
        names = [registry.name("tasks"), registry.name("predictions")]
        counts = KafkaAdmin(self.settings).partition_counts(names)
        tasks, predictions = counts[names[0]], counts[names[1]]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready(tasks, predictions):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"workers not ready in {READY_TIMEOUT_S:g} s; logs in {self.stack.work_dir}"
                )
            time.sleep(0.5)  # heartbeats arrive every second: nothing finer to wait on
        progress(f"workers ready: {tasks} tasks partitions, {predictions} predictions partitions")

    def _ready(self, tasks: int, predictions: int) -> bool:
        self.stack.check_running()
        try:
            beats = {b.worker_id: b for b in self.bench_client.workers()}
        except KafkaError as exc:  # a topic created a moment ago may not have its leader yet
            progress(f"not ready yet: {exc}")
            return False
        owned: dict[str, list[int]] = {"predict": [], "score": []}
        for worker in self.stack.alive():
            if worker.kind in owned and worker.name in beats:
                owned[worker.kind].append(beats[worker.name].assigned_partitions)
        if len(owned["predict"]) < len(self.pids("predict")) or 0 in owned["predict"]:
            return False
        if sum(owned["predict"]) != tasks or sum(owned["score"]) != predictions:
            return False
        return self._aggregator_has_member()

    def _aggregator_has_member(self) -> bool:
        group = f"{self.prefix}aggregate"
        admin = AdminClient(self.settings.confluent())
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        return bool(description.members)

    def metrics_urls(self) -> list[str]:
        """The /metrics address of every predictor, from its heartbeat."""
        names = {w.name for w in self.stack.workers if w.kind == "predict"}
        return [b.metrics_url for b in self.bench_client.workers() if b.worker_id in names and b.metrics_url]

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Stop workers (predictors first), the client and the broker; each step even if one fails."""
        steps: list[Callable[[], object]] = [self.stack.stop_all, self.broker.stop]
        if self.client is not None:
            steps.insert(1, self.client.close)
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep stopping the rest; say what failed
                progress(f"cleanup step {getattr(step, '__qualname__', step)} failed: {exc}")


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used (all cores; not idle, not waiting on I/O)."""
    times = psutil.cpu_times()
    return float(sum(times)) - times.idle - getattr(times, "iowait", 0.0)


@dataclass
class CpuWindow:
    """CPU seconds of named groups of processes between :meth:`begin` and :meth:`end`, and of the
    whole machine (``machine_s``: other work on a shared machine included)."""

    groups: Mapping[str, list[int]]
    own: Callable[[], float]
    start: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)
    machine_s: float = 0.0
    _machine_start: float = 0.0

    def _now(self) -> dict[str, float]:
        found = {name: sum(cpu_s(pid) for pid in pids) for name, pids in self.groups.items()}
        found["client"] = self.own()
        return found

    def begin(self) -> None:
        self.start = self._now()
        self._machine_start = machine_busy_s()

    def end(self) -> dict[str, float]:
        now = self._now()
        self.machine_s = machine_busy_s() - self._machine_start
        self.spent = {name: now[name] - self.start[name] for name in now}
        return self.spent


class Sampler(threading.Thread):
    """Samples max RSS of named processes (every ``period_s``) and max predictor in-flight (/metrics,
    every ``scrape_every`` samples) until stopped.

    Its own CPU time (``thread_cpu_s``) is reported so that it can be taken out of the client's.
    A scrape costs the predictor ~3.4 ms of CPU to render its metrics, which the predictors' CPU
    includes; Prometheus scrapes every 15 s, so scraping 4 times a second would overstate it.
    """

    def __init__(
        self, pids: Mapping[str, int], metrics_urls: list[str], period_s: float = 0.5, scrape_every: int = 4
    ) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.urls = metrics_urls
        self.period_s = period_s
        self.scrape_every = scrape_every
        self.max_rss: dict[str, int] = dict.fromkeys(pids, 0)
        self.max_in_flight: dict[str, int] = dict.fromkeys(metrics_urls, 0)
        self.thread_cpu_s = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        started = time.thread_time()
        with httpx.Client(timeout=2.0) as http:
            samples = 0
            while not self._stop_event.wait(self.period_s):
                self._sample_rss()
                samples += 1
                if samples % self.scrape_every == 0:
                    self._sample_in_flight(http)
        self.thread_cpu_s = time.thread_time() - started

    def _sample_rss(self) -> None:
        for name, process in self.processes.items():
            try:
                self.max_rss[name] = max(self.max_rss[name], process.memory_info().rss)
            except psutil.NoSuchProcess:
                continue

    def _sample_in_flight(self, http: httpx.Client) -> None:
        for url in self.urls:
            try:
                found = _IN_FLIGHT.search(http.get(url).text)
            except httpx.HTTPError:
                continue
            if found:
                self.max_in_flight[url] = max(self.max_in_flight[url], int(float(found.group(1))))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
