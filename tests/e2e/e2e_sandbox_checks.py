"""What the sandbox end-to-end tests check from outside a predictor: its Deno processes and metrics.

Deno processes are counted by session: workers are started in sessions of their own and the
sandbox does not start new ones, so a Deno process in the predictor's session is one it started,
whether or not it is still its child (another test's sandboxes, running at the same time on the
same machine, are not counted).
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import psutil


def deno_processes(session: int) -> list[int]:
    """Live Deno processes in ``session`` (zombies, already dead, are not counted)."""
    found = []
    for process in psutil.process_iter(["name", "status"]):
        if process.info["name"] != "deno" or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getsid(process.pid) == session:
                found.append(process.pid)
        except ProcessLookupError:
            continue
    return found


def all_deno_processes() -> int:
    return sum(1 for process in psutil.process_iter(["name"]) if process.info["name"] == "deno")


def sandbox_executions(targets_dir: Path, worker_id: str) -> dict[str, float]:
    """The predictor's ``dspex_sandbox_executions_total`` by outcome, read from its /metrics."""
    [entry] = json.loads((targets_dir / f"{worker_id}.json").read_text())
    with urllib.request.urlopen(f"http://{entry['targets'][0]}/metrics", timeout=10) as response:
        text = response.read().decode()
    prefix = 'dspex_sandbox_executions_total{outcome="'
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            outcome, _, value = line.removeprefix(prefix).partition('"} ')
            counts[outcome] = counts.get(outcome, 0.0) + float(value)
    return counts
