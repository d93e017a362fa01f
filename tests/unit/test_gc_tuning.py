"""Worker processes tune CPython's collector (dspex._gc); checked in a child so pytest's is untouched."""

from __future__ import annotations

import json
import subprocess
import sys

from dspex._gc import WORKER_GC_THRESHOLDS

_CHILD = """
import gc, json
before = gc.get_threshold()
from dspex._gc import tune_gc_for_worker
tune_gc_for_worker()
tune_gc_for_worker()  # idempotent
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_a_worker_freezes_start_up_objects_and_collects_less_often() -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["before"] == [700, 10, 10]  # CPython's defaults
    assert tuple(seen["after"]) == WORKER_GC_THRESHOLDS
    assert seen["frozen"] > 1_000  # what the interpreter and the imports so far created
