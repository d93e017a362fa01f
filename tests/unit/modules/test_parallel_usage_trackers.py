"""Each parallel call has its own ``settings.usage_tracker`` (a copy of the one open around the run,
as DSPy gives each worker thread), while what the calls' LMs spend still reaches the outer tracker."""

from __future__ import annotations

from typing import Any

from dspex.configuration import context, settings
from dspex.lm.usage import Usage, UsageTracker, record_usage
from dspex.modules import Parallel
from dspex.utils.parallelizer import ParallelExecutor

OWN = "openai/reported-by-the-call"
LM = "openai/sim-small"


def spend(prompt: int) -> dict[str, Any]:
    """The call's own report under ``OWN`` (to its ``settings.usage_tracker``) and an LM call's usage
    under ``LM`` (to every tracker open); what its tracker holds under ``OWN`` afterwards."""
    own = settings.usage_tracker
    own.add_usage(OWN, {"prompt_tokens": prompt, "completion_tokens": 1, "total_tokens": prompt + 1})
    record_usage(Usage(prompt_tokens=10, completion_tokens=2, lm_calls=1), LM, {"prompt_tokens": 10})
    totals: dict[str, Any] = own.get_total_tokens()[OWN]
    return totals


def test_each_parallel_pair_sees_only_its_own_usage() -> None:
    outer = UsageTracker(by_model=True)
    with context(track_usage=True, usage_tracker=outer):
        first, second = Parallel(num_threads=2)([(spend, (50,)), (spend, (80,))])
    assert (first["prompt_tokens"], second["prompt_tokens"]) == (50, 80)
    # the LM calls reached the outer tracker; the calls' own reports stayed with them
    assert OWN not in outer.get_total_tokens()
    assert outer.get_total_tokens()[LM]["prompt_tokens"] == 20 and outer.usage.lm_calls == 2


def test_each_executor_thread_sees_only_its_own_usage() -> None:
    outer = UsageTracker(by_model=True)
    with context(track_usage=True, usage_tracker=outer):
        totals = ParallelExecutor(num_threads=2).execute(spend, [5, 7, 9])
    assert [total["prompt_tokens"] for total in totals] == [5, 7, 9]
    assert outer.usage.lm_calls == 3 and OWN not in outer.get_total_tokens()


def test_without_a_tracker_parallel_calls_run_as_before() -> None:
    assert Parallel(num_threads=2)([(len, ("ab",)), (len, ("abc",))]) == [2, 3]
