"""Garbage-collector settings for long-running worker processes.

A worker keeps about a thousand tasks in flight, each allocating coroutines, futures, dicts and
pydantic models, so CPython's default thresholds (700, 10, 10) run a collection every few hundred
microseconds, and every tenth young collection also walks the middle generation; the oldest
generation holds everything imported at start-up (pydantic schemas, faust, aiohttp), which each full
collection walks again. Measured with ``bench/_predictor_cpu.py`` (6,000 tasks at 100 ms): a
predictor spent about a third of its CPU in the collector (0.80 ms per example with the defaults,
0.51-0.54 with a young threshold of 50,000).

So a worker, once started, freezes what start-up created (``gc.freeze``: moved out of every
generation, never walked again) and collects the young generation every 200,000 allocations instead
of 700. Reference counting still frees almost everything at once; only objects in reference cycles
wait for a collection.

Why 200,000 and not fewer: a young collection walks every young object still alive, and with a
thousand tasks in flight that is most of their state: ~45 ms per collection at 50,000, ~100 ms at
200,000. CPython's count of young objects never drops below zero, so deaths of objects promoted
earlier do not offset new allocations, and the count climbs by a few dozen per task even when
nothing leaks. At 50,000 a predictor ran 11-13 collections per 8,000 tasks, 0.50-0.64 s of CPU
(about a tenth of its time); at 200,000 it ran one. ``bench/_predictor_cpu.py --examples 8000``
measured 0.45-0.47 ms of CPU per example at 200,000 against 0.52-0.55 at 50,000; the 50,000 runs
also had every ``Module.acall`` leave a reference cycle behind, so not all of that difference is the
collector's. Garbage in cycles (tracebacks of failed calls) still waits for at most 200,000
allocations.

Only worker entry points call this: the client and local ``Evaluate`` run inside a user's program,
whose collector is theirs to tune. One exception, which changes no threshold: a GEPA round freezes
the objects older than the round while it runs and unfreezes them after, unless something (a
worker's start-up, the user) froze objects already (:mod:`dspex.optimizers.gepa._collector`).
"""

from __future__ import annotations

import gc

__all__ = ["WORKER_GC_THRESHOLDS", "tune_gc_for_worker"]

# (young, middle, old): a young collection every 200,000 net allocations; the middle generation
# every 20 young ones; the old one every 10 middle ones (and CPython only runs it when the old
# generation grew by a quarter since the last full collection).
WORKER_GC_THRESHOLDS = (200_000, 20, 10)


def tune_gc_for_worker() -> None:
    """Freeze the objects created so far and apply :data:`WORKER_GC_THRESHOLDS` (idempotent)."""
    gc.collect()  # so that start-up garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLDS)
