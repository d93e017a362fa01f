"""A consumer process killed with SIGKILL halfway through; another member of its group finishes.

Nothing may be missing afterwards: every input has an output (duplicates are allowed under
at-least-once, and counted). The survivor takes over within the short session timeout and,
on SIGTERM, drains, commits and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from streams_kafka import TopicTail, committed_and_end, produce_all

from dspex.streams.admin import KafkaAdmin
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

MESSAGES = 5_000
WORKER = Path(__file__).with_name("streams_crash_worker.py")
TAKEOVER_LIMIT_S = 30.0  # session timeout 6 s + rebalance + the remaining half of the work


def start_worker(settings: KafkaSettings, group: str, registry: TopicRegistry) -> subprocess.Popen[str]:
    names = [registry.name(role) for role in ("tasks", "predictions", "dlq")]
    command = [sys.executable, str(WORKER), settings.bootstrap_servers, group, *names]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def reap(process: subprocess.Popen[str]) -> None:
    """Kill the worker if it still runs, wait for it, and close its pipes (the killed one's are
    never read)."""
    if process.poll() is None:
        process.kill()
    process.wait(10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def test_killed_consumer_loses_nothing(
    settings: KafkaSettings, registry: TopicRegistry, unique_group: Callable[[str], str]
) -> None:
    group = unique_group("crash")
    inputs = [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(MESSAGES)]

    async def produce_inputs() -> None:
        async with AsyncProducer(settings) as producer:
            await produce_all(producer, registry.name("tasks"), inputs)

    asyncio.run(produce_inputs())
    outputs = TopicTail(settings, registry.name("predictions"))
    first = start_worker(settings, group, registry)
    second: subprocess.Popen[str] | None = None
    try:
        outputs.read_until(lambda records: len(records) >= MESSAGES // 2, 60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()

        second = start_worker(settings, group, registry)
        distinct = lambda records: {record.value for record in records}  # noqa: E731
        outputs.read_until(lambda records: len(distinct(records)) >= MESSAGES, TAKEOVER_LIMIT_S + 30)
        takeover_s = time.monotonic() - killed_at

        second.send_signal(signal.SIGTERM)
        stdout, stderr = second.communicate(timeout=30)
        assert second.returncode == 0, f"the survivor did not stop cleanly:\n{stderr[-3000:]}"
    finally:
        for process in (first, second):
            if process is not None:
                reap(process)
        outputs.close()

    values = Counter(record.value for record in outputs.records)
    duplicates = sum(count - 1 for count in values.values())
    stats = json.loads(stdout.strip().splitlines()[-1])
    print(f"\nsurvivor finished {takeover_s:.1f} s after the kill; duplicates: {duplicates}; {stats}")
    assert set(values) == {value for _, value, _ in inputs}
    assert takeover_s < TAKEOVER_LIMIT_S
    # The survivor resumed from what the killed one had committed, not from the beginning.
    assert 0 < stats["handled"] < MESSAGES and stats["dead_lettered"] == 0
    committed, end = committed_and_end(KafkaAdmin(settings), group, registry.name("tasks"))
    assert committed == end, "the survivor's drain on SIGTERM did not commit everything"
