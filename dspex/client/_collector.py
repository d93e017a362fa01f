"""Pausing the garbage collector while the client builds a batch of results, and only then.

Reading a job's results allocates about twenty tracked objects per example (the decoded score
record, its prediction, usage, the example's result) and none of them form reference cycles, so the
collector frees nothing there: it only walks them again and again. Measured in a 6,000-example job
of ``bench/pipeline_throughput.py --mode defaults`` (gc.callbacks in the benchmark's process): 240-244
young, 21-22 middle and 2 full collections over the client's evaluate call, 0.21-0.22 s of the
client's ~0.9 s of CPU, 0.16-0.18 s of it the two full ones, each walking the whole process's heap.
With the pauses below: 148-177, 13-16 and 1, 0.09-0.12 s (6 interleaved pairs); the client's CPU
after the final status (the job's last, unoverlapped step) went from 0.19-0.20 s to 0.08-0.11 s.

The collector stays the user's (see :mod:`dspex._gc`): its thresholds are left alone and nothing is
frozen. It is paused only around one synchronous step that builds results (one fetched batch, the
final result), then enabled again if it was on before; the allocations of the step still count, so
the next collection comes right after it, one walk instead of one per 700 allocations.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the collector off; back on afterwards only if it was on (a user's
    ``gc.disable()`` stays in force; one made by another thread during the block is undone by it:
    the blocks are milliseconds of the client's own work). Nested or concurrent blocks leave it on
    when the first of them found it on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
