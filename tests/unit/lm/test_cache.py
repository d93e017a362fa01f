"""LM cache keys, and hits and misses of LM responses on both tiers of the cache."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from dspex.errors import ConfigurationError
from dspex.lm.cache import Cache, cache_for, cache_key

BASE = "http://127.0.0.1:8000/v1"
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "2 + 3?"}],
    "temperature": 0.0,
    "max_tokens": 100,
}
KNOWN_KEY = "c3568b3b8407413bbfa1be7492e883b8"
RESPONSE = {"choices": [{"message": {"content": "5"}}], "usage": {"prompt_tokens": 9}}


def test_the_key_is_stable_and_ignores_key_order() -> None:
    reordered = dict(reversed(list(BODY.items())))
    assert cache_key(BASE, BODY) == cache_key(BASE, reordered)
    assert len(cache_key(BASE, BODY)) == 32


def test_the_key_pins_what_it_covers() -> None:
    # Pinned so that a change to what the key covers is a decision, not an accident: changing it
    # orphans every cache on every machine.
    assert cache_key(BASE, BODY) == KNOWN_KEY


@pytest.mark.parametrize(
    "change",
    [{"seed": 1}, {"temperature": 0.7}, {"model": "gpt-4o"}, {"messages": []}],
)
def test_anything_the_provider_sees_changes_the_key(change: dict[str, object]) -> None:
    assert cache_key(BASE, {**BODY, **change}) != cache_key(BASE, BODY)


def test_different_seeds_give_different_keys() -> None:
    assert cache_key(BASE, {**BODY, "seed": 1}) != cache_key(BASE, {**BODY, "seed": 2})


def test_the_api_base_is_part_of_the_key() -> None:
    assert cache_key(BASE, BODY) != cache_key("https://api.openai.com/v1", BODY)


def _lm_cache(directory: Path, memory_entries: int = 1000) -> Cache:
    return Cache(True, True, directory, memory_max_entries=memory_entries)


def test_memory_layer_hit_and_miss(tmp_path: Path) -> None:
    cache = _lm_cache(tmp_path)
    assert cache.lm_get("k") is None
    cache.lm_put("k", RESPONSE)
    assert cache.lm_get("k") == RESPONSE


def test_disk_layer_survives_a_new_process_view(tmp_path: Path) -> None:
    writer = _lm_cache(tmp_path)
    writer.lm_put("k", RESPONSE)
    writer.flush()
    writer.reset_memory_cache()
    assert writer.lm_get("k") == RESPONSE  # from disk, then promoted to memory
    assert "k" in writer.memory_cache
    other = _lm_cache(tmp_path)  # a second handle on the same directory, as another process would have
    assert other.lm_get("k") == RESPONSE
    assert other.lm_get("missing") is None


def test_the_memory_layer_is_bounded_lru() -> None:
    cache = Cache(False, True, None, memory_max_entries=2)
    cache.lm_put("a", {"k": "a"})
    cache.lm_put("b", {"k": "b"})
    assert cache.lm_get("a") == {"k": "a"}  # "a" is now the most recent
    cache.lm_put("c", {"k": "c"})
    assert cache.lm_get("b") is None
    assert cache.lm_get("a") == {"k": "a"} and cache.lm_get("c") == {"k": "c"}


def test_one_cache_per_directory_in_a_process(tmp_path: Path) -> None:
    assert cache_for(tmp_path) is cache_for(str(tmp_path))
    assert cache_for(tmp_path) is not cache_for(tmp_path / "other")


def test_an_unusable_directory_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigurationError, match=r"cache=False"):
        cache_for(blocker / "sub")


def test_lm_responses_are_stored_as_json_text_not_pickles(tmp_path: Path) -> None:
    cache = Cache(True, False, tmp_path, restrict_pickle=True)
    cache.lm_put("k", RESPONSE)
    cache.flush()
    assert isinstance(cache.disk_cache.get("k"), str)  # read back without unpickling anything
    assert cache.lm_get("k") == RESPONSE


def test_a_damaged_lm_entry_on_disk_is_a_miss_not_an_error(tmp_path: Path) -> None:
    cache = Cache(True, False, tmp_path)
    cache.disk_cache.set("k", '{"choices": [')  # a truncated write
    assert cache.lm_get("k") is None
    cache.lm_put("k", RESPONSE)  # the fresh answer replaces it
    cache.flush()
    assert cache.lm_get("k") == RESPONSE


def test_reads_are_fast_enough_to_run_on_the_event_loop(tmp_path: Path) -> None:
    # Reads are inline (not in a thread): a disk point read is cheaper than a hop to a thread pool
    # (~50-100 us). Generous bounds: this machine is shared.
    cache = _lm_cache(tmp_path)
    for i in range(2000):
        cache.lm_put(f"k{i}", RESPONSE)
    cache.flush()
    cache.reset_memory_cache()
    took = []
    for i in range(2000):
        started = time.perf_counter()
        assert cache.lm_get(f"k{i}") is not None
        took.append(time.perf_counter() - started)
    assert statistics.median(took) < 500e-6
