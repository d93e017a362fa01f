"""Cache keys, and hits and misses on both layers of the response cache."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from dspex.errors import ConfigurationError
from dspex.lm.cache import ResponseCache, _MemoryLRU, cache_for, cache_key

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


def test_memory_layer_hit_and_miss(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    assert cache.get("k") is None
    cache.put("k", RESPONSE)
    assert cache.get("k") == RESPONSE


def test_disk_layer_survives_a_new_process_view(tmp_path: Path) -> None:
    writer = ResponseCache(tmp_path)
    writer.put("k", RESPONSE)
    writer.flush()
    writer.clear_memory()
    assert writer.get("k") == RESPONSE  # from disk, then promoted to memory
    other = ResponseCache(tmp_path)  # a second handle on the same file, as another process would have
    assert other.get("k") == RESPONSE
    assert other.get("missing") is None


def test_the_memory_layer_is_bounded_lru() -> None:
    memory = _MemoryLRU(2)
    memory.put("a", {"k": "a"})
    memory.put("b", {"k": "b"})
    assert memory.get("a") == {"k": "a"}  # "a" is now the most recent
    memory.put("c", {"k": "c"})
    assert memory.get("b") is None
    assert memory.get("a") == {"k": "a"} and memory.get("c") == {"k": "c"}


def test_one_cache_per_directory_in_a_process(tmp_path: Path) -> None:
    assert cache_for(tmp_path) is cache_for(str(tmp_path))
    assert cache_for(tmp_path) is not cache_for(tmp_path / "other")


def test_an_unusable_directory_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigurationError, match=r"cache=False"):
        ResponseCache(blocker / "sub").put("k", RESPONSE)


def test_reads_are_fast_enough_to_run_on_the_event_loop(tmp_path: Path) -> None:
    # The reason reads are inline (not in a thread): a WAL point read costs ~10 us here, less than
    # a hop to a thread pool (~50-100 us). Generous bounds: this machine is shared.
    cache = ResponseCache(tmp_path)
    for i in range(2000):
        cache.put(f"k{i}", RESPONSE)
    cache.flush()
    cache.clear_memory()
    took = []
    for i in range(2000):
        started = time.perf_counter()
        assert cache.get(f"k{i}") is not None
        took.append(time.perf_counter() - started)
    assert statistics.median(took) < 500e-6
