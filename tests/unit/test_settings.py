"""configure / context / current_settings: explicit keywords, per-task and per-thread overrides."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from dspex import configuration as settings
from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.configuration import configure, context, current_settings
from dspex.errors import ConfigurationError
from dspex.lm import LM


def _lm(name: str) -> LM:
    return LM(f"openai/{name}", api_base="http://127.0.0.1:9/v1", cache=False)


@pytest.fixture
def restore_defaults() -> Iterator[None]:
    """For the tests that call configure(): put the process defaults back afterwards."""
    before = current_settings()
    yield
    configure(lm=before.lm, adapter=before.adapter)


def test_configure_sets_process_defaults_and_none_clears(restore_defaults: None) -> None:
    lm, adapter = _lm("default"), JSONAdapter()
    configure(lm=lm, adapter=adapter)
    # (the default DSPy trace list holds whatever predictors ran before in this process)
    assert current_settings() == settings.Settings(lm=lm, adapter=adapter, trace=current_settings().trace)
    configure(adapter=None)  # a keyword left out keeps its value
    assert current_settings().lm is lm and current_settings().adapter is None


def test_unknown_keyword_names_it_and_lists_the_accepted_ones() -> None:
    with pytest.raises(
        ConfigurationError, match=r"unknown setting\(s\): max_tokens; accepted: lm, adapter, rm, trace"
    ):
        configure(lm=None, trace=[], max_tokens=5)
    expected = r"context\(\) got unknown setting\(s\): temperature"
    with pytest.raises(ConfigurationError, match=expected), context(temperature=0.1):
        pass


def test_wrong_types_are_rejected_with_what_was_expected() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"configure\(lm=...\) needs a dspex.BaseLM or Callable or None, got builtins.str",
    ):
        configure(lm="openai/gpt-4o-mini")  # type: ignore[arg-type]
    expected = r"needs a dspex\.Adapter"
    with pytest.raises(ConfigurationError, match=expected), context(adapter=ChatAdapter):  # type: ignore[arg-type]
        pass


def test_dspys_experimental_switch_and_a_callable_lm_are_kept(restore_defaults: None) -> None:
    def plain_lm(**kwargs: object) -> list[str]:
        return ["text"]

    with context(experimental=True, lm=plain_lm):  # type: ignore[arg-type]
        assert current_settings().experimental is True and current_settings().lm is plain_lm


def test_context_overrides_inside_the_block_only(restore_defaults: None) -> None:
    default, override = _lm("default"), _lm("override")
    configure(lm=default)
    with context(lm=override) as inside:
        assert inside.lm is override and current_settings().lm is override
        with context(adapter=JSONAdapter()):
            assert current_settings().lm is override  # nested blocks layer
        # A later configure() still shows through for what the block did not override.
        adapter = ChatAdapter()
        configure(adapter=adapter)
        assert current_settings().adapter is adapter
    assert current_settings().lm is default


async def test_context_is_per_task_under_gather() -> None:
    lms = [_lm(f"task{i}") for i in range(50)]
    all_inside = asyncio.Barrier(50)

    async def task(lm: LM) -> bool:
        with context(lm=lm):
            await all_inside.wait()  # every task is inside its own block at once
            return current_settings().lm is lm

    assert all(await asyncio.gather(*(task(lm) for lm in lms)))
    assert current_settings().lm is None


def test_context_is_per_thread() -> None:
    lms = [_lm(f"thread{i}") for i in range(8)]
    barrier = threading.Barrier(8)
    seen: dict[int, bool] = {}

    def worker(i: int) -> None:
        with context(lm=lms[i]):
            barrier.wait(timeout=10)
            seen[i] = current_settings().lm is lms[i]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {i: True for i in range(8)}


def test_configure_from_another_thread_is_allowed(restore_defaults: None) -> None:
    lm = _lm("from-thread")
    thread = threading.Thread(target=lambda: configure(lm=lm))
    thread.start()
    thread.join()
    assert current_settings().lm is lm


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    settings.reset_settings()
    yield
    settings.reset_settings()


def test_the_settings_object_reads_dspys_settings_with_their_defaults(fresh_settings: None) -> None:
    import dspex

    assert (dspex.settings.lm, dspex.settings.num_threads, dspex.settings.max_errors) == (None, 8, 10)
    assert dspex.settings.trace == [] and dspex.settings.callbacks == []
    assert dspex.settings.warn_on_type_mismatch is True and dspex.settings.disable_history is False
    with dspex.settings.context(max_errors=3):
        assert dspex.settings.max_errors == 3 and dspex.settings.copy()["max_errors"] == 3
    assert dspex.settings["max_errors"] == 10
    with pytest.raises(AttributeError, match="no setting 'temprature'"):
        _ = dspex.settings.temprature


def test_any_thread_may_configure_and_open_blocks_see_it(fresh_settings: None) -> None:
    with context(max_errors=1):
        assert current_settings().num_threads == 8
        worker = threading.Thread(target=lambda: configure(num_threads=3))
        worker.start()
        worker.join()
        # the block's cached merge is stale after configure(): the new default shows through
        assert (current_settings().num_threads, current_settings().max_errors) == (3, 1)
    assert (current_settings().num_threads, current_settings().max_errors) == (3, 10)


def test_settings_of_the_wrong_type_name_the_setting_and_the_type(fresh_settings: None) -> None:
    with pytest.raises(ConfigurationError, match=r"configure\(num_threads=...\) needs an int or None"):
        configure(num_threads="8")
    wrong_callbacks = pytest.raises(ConfigurationError, match=r"context\(callbacks=...\) needs a list")
    with wrong_callbacks, context(callbacks=object()):
        pass
