"""DSPy's small utilities under their DSPy paths: ``ParallelExecutor``, ``@experimental``, ``magicattr``."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dspex
import dspex.datasets
from dspex.configuration import reset_settings
from dspex.utils import magicattr
from dspex.utils.annotation import experimental
from dspex.utils.parallelizer import ParallelExecutor


@pytest.fixture(autouse=True)
def fresh_settings() -> Any:
    reset_settings()
    yield
    reset_settings()


# -- ParallelExecutor -----------------------------------------------------------------------------


def _fails_on(*bad: int) -> Any:
    def work(item: int) -> int:
        if item in bad:
            raise ValueError(f"bad {item}")
        return item * 10

    return work


@pytest.mark.parametrize("threads", [1, 4])
def test_results_keep_their_order_and_failures_are_none_with_their_exceptions(threads: int) -> None:
    executor = ParallelExecutor(num_threads=threads, max_errors=5)
    assert executor.execute(_fails_on(2, 5), [1, 2, 3, 4, 5, 6]) == [10, None, 30, 40, None, 60]
    assert sorted(executor.failed_indices) == [1, 4]
    assert str(executor.exceptions_map[4]) == "bad 5"


@pytest.mark.parametrize("threads", [1, 4])
def test_reaching_max_errors_cancels_and_raises(threads: int) -> None:
    executor = ParallelExecutor(num_threads=threads, max_errors=2)
    with pytest.raises(dspex.DspexError, match="Execution cancelled due to errors"):
        executor.execute(_fails_on(1, 2, 3, 4), [1, 2, 3, 4, 5])


def test_calls_see_the_callers_settings_and_one_thread_means_the_calling_one() -> None:
    seen: list[tuple[int, bool]] = []

    def work(item: int) -> int:
        seen.append((dspex.settings.max_errors, threading.current_thread() is threading.main_thread()))
        return item

    with dspex.context(max_errors=77):
        ParallelExecutor(num_threads=1).execute(work, [1, 2])
        ParallelExecutor(num_threads=3).execute(work, [3, 4, 5])
    assert seen[:2] == [(77, True), (77, True)]
    assert {s[0] for s in seen[2:]} == {77}


def test_defaults_come_from_settings() -> None:
    dspex.configure(num_threads=5, max_errors=9)
    executor = ParallelExecutor()
    assert (executor.num_threads, executor.max_errors) == (5, 9)


# -- @experimental ---------------------------------------------------------------------------------


def test_experimental_puts_dspys_notice_first_in_the_docstring() -> None:
    @experimental(version="9.9.9")
    def documented() -> str:
        """Does a thing."""
        return "done"

    @experimental
    class Bare:
        pass

    assert documented.__doc__ == (
        "Experimental: This function may change or be removed in a future release without warning "
        "(introduced in v9.9.9).\n\nDoes a thing."
    )
    assert documented() == "done"
    assert (
        Bare.__doc__
        == "Experimental: This class may change or be removed in a future release without warning."
    )


# -- magicattr -------------------------------------------------------------------------------------


class _Node:
    def __init__(self, name: str, children: list[Any], meta: dict[str, Any]) -> None:
        self.name = name
        self.children = children
        self.meta = meta


def test_magicattr_reads_sets_and_deletes_by_path() -> None:
    leaf = _Node("leaf", [], {"tags": ["a", "b"]})
    root = _Node("root", [leaf], {"size": {"w": 1}})
    assert magicattr.get(root, 'children[-1].meta["tags"][1]') == "b"
    assert magicattr.get(root, "missing", default=3) == 3
    magicattr.set(root, 'meta["size"]["w"]', 5)
    magicattr.set(root, "children[0].name", "renamed")
    assert root.meta["size"]["w"] == 5 and leaf.name == "renamed"
    magicattr.delete(root, "children[0]")
    magicattr.delete(leaf, "name")
    assert root.children == [] and not hasattr(leaf, "name")


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("children[0+1]", NotImplementedError),
        ("children.pop(0)", ValueError),
        ("children = []", ValueError),
        ("children..", SyntaxError),
        ('meta["nope"]', KeyError),
        ("children[9]", IndexError),
        ("  ", ValueError),
        (None, TypeError),
    ],
)
def test_magicattr_refuses_what_is_not_a_plain_path(path: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        magicattr.get(_Node("n", [], {}), path)


# -- datasets.Dataset ------------------------------------------------------------------------------


class _Numbers(dspex.datasets.Dataset):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(input_keys=["x"], **kwargs)
        self._train = [{"x": i, "y": i * i} for i in range(20)]
        self._dev = [{"x": -i, "y": i * i} for i in range(20)]
        self._test = []


def test_dataset_splits_are_seeded_sized_marked_and_redrawn_after_reset() -> None:
    data = _Numbers(train_seed=3, train_size=5, eval_seed=4, dev_size=7)
    first = data.train
    assert first is data.train  # drawn once
    assert len(first) == 5 and len(data.dev) == 7 and data.test == []
    assert all(e.dspy_split == "train" and e.inputs().keys() == ["x"] for e in first)
    assert [e.x for e in first] == [e.x for e in _Numbers(train_seed=3, train_size=5).train]
    data.reset_seeds(train_seed=8)
    assert data.train_size == 5 and data.dev_seed == 4  # untouched
    assert [e.x for e in data.train] != [e.x for e in first]
    sets = _Numbers.prepare_by_seed(train_seeds=[1, 2], train_size=3, dev_size=10)
    assert [len(s) for s in sets.train_sets] == [3, 3] and [len(s) for s in sets.eval_sets] == [5, 5]


# -- asyncify's limiter, callback ids in threads, DSPy paths ---------------------------------------


async def test_asyncify_runs_plain_callables_at_most_async_max_workers_at_once() -> None:
    from dspex.utils.asyncify import asyncify, get_limiter

    running, peak = 0, 0
    lock = threading.Lock()

    def work() -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return 42

    with dspex.context(async_max_workers=2):
        assert get_limiter().total_tokens == 2
        results = await asyncio.gather(*(asyncify(work)() for _ in range(6)))
    assert results == [42] * 6 and peak == 2
    assert get_limiter() is get_limiter() and get_limiter().total_tokens == 8  # the default again


def test_a_bound_function_runs_under_the_call_id_it_was_bound_in() -> None:
    from dspex.utils.callback import ACTIVE_CALL_ID, _bind_active_call_id

    token = ACTIVE_CALL_ID.set("parent-call")
    try:
        bound = _bind_active_call_id(ACTIVE_CALL_ID.get)
    finally:
        ACTIVE_CALL_ID.reset(token)
    seen: list[str | None] = []
    thread = threading.Thread(target=lambda: seen.append(bound()))
    thread.start()
    thread.join()
    assert seen == ["parent-call"] and ACTIVE_CALL_ID.get() is None


def test_dspy_paths_of_history_printing() -> None:
    from dspex.utils.inspect_history import pretty_print_history as from_dspy_path

    from dspex.lm.history import pretty_print_history

    assert from_dspy_path is pretty_print_history


def test_dspy_utils_saving_loads_what_module_save_wrote(tmp_path: Path) -> None:
    from dspex.utils.saving import get_dependency_versions, load

    program = dspex.Predict("question -> answer")
    program.save(tmp_path / "qa.json")
    assert isinstance(load(tmp_path / "qa.json"), dspex.Predict)
    assert set(get_dependency_versions()) == {"python", "dspy", "cloudpickle"}
