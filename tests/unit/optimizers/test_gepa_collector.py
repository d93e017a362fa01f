"""GEPA rounds run with the objects that existed before them set aside from collections."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from gepa_fakes import ScriptedLM, dataset, feedback_metric

from dspex.configuration import context
from dspex.modules import Predict
from dspex.optimizers import GEPA
from dspex.optimizers.gepa._collector import older_objects_set_aside


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_cycle_made_before_the_block_is_not_collected_inside_it_and_is_after() -> None:
    assert gc.get_freeze_count() == 0
    cycle = _Cycle()
    alive = weakref.ref(cycle)
    with older_objects_set_aside():
        assert gc.get_freeze_count() > 0
        assert not any(obj is cycle for obj in gc.get_objects())  # not walked by any collection
        del cycle  # garbage now, but frozen: a collection inside the block leaves it
        gc.collect()
        assert alive() is not None
    assert gc.get_freeze_count() == 0  # unfrozen on exit
    gc.collect()
    assert alive() is None


def test_garbage_made_inside_the_block_is_still_collected() -> None:
    with older_objects_set_aside():
        cycle = _Cycle()
        alive = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert alive() is None


def test_someone_elses_freeze_and_a_disabled_collector_are_left_alone() -> None:
    theirs = _Cycle()
    gc.freeze()
    try:
        with older_objects_set_aside():
            pass
        # their freeze is not undone: the object is still out of the collector's generations (the
        # freeze count itself moves while other threads free frozen objects, so it is not compared)
        assert gc.get_freeze_count() > 0 and not any(obj is theirs for obj in gc.get_objects())
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        with older_objects_set_aside():
            assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


async def test_each_gepa_round_runs_with_the_older_objects_frozen() -> None:
    frozen_during_runs: list[int] = []

    def metric(*args: Any, **kwargs: Any) -> Any:
        frozen_during_runs.append(gc.get_freeze_count())
        return feedback_metric(*args, **kwargs)

    lm = ScriptedLM()
    optimizer = GEPA(metric, max_metric_calls=20, reflection_lm=lm, seed=1)
    with context(lm=lm):
        await optimizer.acompile(
            Predict("question -> answer"), trainset=dataset(6), valset=dataset(3, offset=50)
        )
    assert frozen_during_runs and all(count > 0 for count in frozen_during_runs)
    assert gc.get_freeze_count() == 0  # nothing left frozen after the compile
