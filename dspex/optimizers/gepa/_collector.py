"""The collector's oldest objects set aside for one GEPA round.

A compile's first full (oldest-generation) collection walks everything the process made before it:
the imported modules, pydantic's schemas, gepa and dspex themselves, about 100,000 objects. In a
GEPA round that pause stops every thread, so the LM requests of the round's next batch wait for it
(bench/gepa_vs_dspy.py, seed 0 at 0.1 s: 59-105 ms once per compile, beside 26 LM round trips of
100 ms).

So a round runs with the objects that existed when it started frozen (``gc.freeze``): young and
middle collections run as before, a full collection walks only what the round kept, and when the
round ends they are unfrozen (back into the oldest generation, where a later full collection walks
them as usual). The thresholds stay the user's (see :mod:`dspex._gc`). Nothing is frozen when
something else already froze objects or the collector is off: unfreezing would undo their freeze
(one made by another thread during a round is undone with the round's). What it costs: garbage in
reference cycles among objects older than the round waits for the round's end to be collected.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["older_objects_set_aside"]


@contextmanager
def older_objects_set_aside() -> Iterator[None]:
    """Objects alive on entry are left out of collections until exit (see the module)."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
