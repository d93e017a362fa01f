"""Two processes writing LM responses to one cache directory at once leave it whole and readable by both."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dspex.lm.cache import Cache

WRITER = """
import sys
from dspex.lm.cache import Cache

name, directory, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
cache = Cache(True, True, directory)
print("ready", flush=True)
sys.stdin.readline()  # wait for the go, so that both processes write at the same time
for i in range(count):
    cache.lm_put(f"{name}-{i}", {"writer": name, "i": i})
    cache.lm_put(f"shared-{i}", {"writer": "either", "i": i})
    if i % 10 == 0:
        cache.flush()  # many small transactions interleave with the other process's
cache.flush()
print("done", flush=True)
"""

COUNT = 400


@pytest.mark.slow
def test_concurrent_processes_share_one_cache_directory(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(tmp_path), str(COUNT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert all(out.strip().endswith("done") for out in outputs)

    fresh = Cache(True, False, tmp_path)  # disk only: every read below goes to the files
    for name in ("a", "b"):
        expected = [{"writer": name, "i": i} for i in range(COUNT)]
        assert [fresh.lm_get(f"{name}-{i}") for i in range(COUNT)] == expected
    assert all(fresh.lm_get(f"shared-{i}") == {"writer": "either", "i": i} for i in range(COUNT))
    assert len(fresh.disk_cache) == 3 * COUNT
    shards = sorted(tmp_path.glob("*/cache.db"))
    assert shards
    for shard in shards:
        with sqlite3.connect(shard) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
