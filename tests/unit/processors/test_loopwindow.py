"""The loop window: tasks admitted by the event loop's lag, cut when it lags, regrown when it does not."""

from __future__ import annotations

import asyncio
import time

import pytest

from dspex.errors import ConfigurationError
from dspex.processors.loopwindow import LoopLagWindow

LAGGING, IDLE = 0.5, 0.001


def _window(**kwargs: float) -> LoopLagWindow:
    options: dict[str, float] = {"maximum": 1000, "minimum": 50, "target_s": 0.05, "cooldown_s": 0.25}
    options.update(kwargs)
    return LoopLagWindow(**options)  # type: ignore[arg-type]


def test_it_starts_at_the_maximum() -> None:
    assert _window().value == 1000


def test_a_lagging_loop_cuts_the_window_below_what_runs() -> None:
    window = _window()
    window.observe(lag_s=LAGGING, running=900, now=1.0)
    assert window.value == 720  # 0.8 x the 900 running, not 0.8 x the window
    assert window.cuts == 1


def test_one_slow_stretch_cuts_once_until_the_cut_took_effect() -> None:
    window = _window()
    window.observe(lag_s=LAGGING, running=1000, now=1.0)
    for step in range(1, 20):  # still lagging, and the 1,000 running have not drained yet
        window.observe(lag_s=LAGGING, running=1000, now=1.0 + step)
    assert window.value == 800
    window.observe(lag_s=LAGGING, running=800, now=30.0)  # drained to the window and still lagging
    assert window.value == 640


def test_cuts_are_spaced_by_the_cooldown() -> None:
    window = _window()
    window.observe(lag_s=LAGGING, running=500, now=1.0)
    window.observe(lag_s=LAGGING, running=400, now=1.1)
    assert window.value == 400
    window.observe(lag_s=LAGGING, running=400, now=1.3)
    assert window.value == 320


def test_lag_with_few_tasks_running_is_not_theirs_and_cuts_nothing() -> None:
    window = _window()
    window.observe(lag_s=LAGGING, running=10, now=1.0)  # e.g. a program being built
    assert (window.value, window.cuts) == (1000, 0)


def test_the_window_never_falls_below_the_minimum() -> None:
    window = _window()
    for step in range(100):
        window.observe(lag_s=LAGGING, running=window.value, now=float(step))
    assert window.value == 50


def test_a_quiet_loop_regrows_a_full_window_up_to_the_maximum() -> None:
    window = _window()
    window.observe(lag_s=LAGGING, running=500, now=1.0)
    assert window.value == 400
    window.observe(lag_s=IDLE, running=100, now=2.0)  # quiet but mostly unused: no growth
    assert window.value == 400
    for step in range(40):  # one second of samples at 25 ms with the window in use
        window.observe(lag_s=IDLE, running=window.value, now=3.0 + step * 0.025)
    assert 500 < window.value < 1000
    for step in range(1000):
        window.observe(lag_s=IDLE, running=window.value, now=5.0 + step * 0.025)
    assert window.value == 1000


def test_a_lag_between_half_and_the_whole_target_holds_the_window() -> None:
    window = _window()
    window.observe(lag_s=LAGGING, running=500, now=1.0)
    window.observe(lag_s=0.04, running=400, now=2.0)
    assert window.value == 400


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        LoopLagWindow(maximum=10, minimum=20)
    with pytest.raises(ConfigurationError):
        LoopLagWindow(maximum=10, decrease=1.0)


async def test_the_sampler_measures_a_blocked_loop_and_cuts() -> None:
    window = LoopLagWindow(maximum=1000, minimum=10, interval_s=0.01)
    sampler = asyncio.create_task(window.run(lambda: 1000))
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # the loop blocked: the sampler wakes some 0.2 s late
    await asyncio.sleep(0.05)
    sampler.cancel()
    # one cut to 0.8 x the 1,000 running (then held: they never drain here), maybe regrown a little
    assert window.cuts == 1 and 800 <= window.value < 900
