"""DSPy's cache API over dspex's one response cache: Cache, dspex.cache, configure_cache, request_cache."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from aiohttp import web
from lm_served import served_v1

import dspex
from dspex.errors import ConfigurationError
from dspex.lm.cache import Cache, request_cache


@dataclass
class Reply:
    text: str
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class Allowed:
    n: int


@dataclass
class NotAllowed:
    n: int


@pytest.fixture
def fresh_cache(tmp_path: Path) -> Iterator[Cache]:
    """dspex.cache replaced by a memory+disk cache in tmp_path for the test, then restored."""
    original = dspex.cache
    dspex.configure_cache(disk_cache_dir=tmp_path / "global")
    try:
        yield dspex.cache
    finally:
        dspex.cache = original


def _cache(tmp_path: Path, **options: Any) -> Cache:
    return Cache(True, True, tmp_path / "c", **options)


def _memory() -> Cache:
    return Cache(False, True, None)


def test_a_hit_is_a_copy_with_usage_cleared_and_marked(tmp_path: Path) -> None:
    cache = _memory()
    stored = Reply("hi", {"total_tokens": 7})
    cache.put({"prompt": "p"}, stored)
    hit = cache.get({"prompt": "p"})
    assert hit == Reply("hi", {}) and hit.cache_hit is True
    assert stored.usage == {"total_tokens": 7} and not hasattr(stored, "cache_hit")
    assert cache.get({"prompt": "other"}) is None


def test_strict_pydantic_models_take_the_hit_marker(tmp_path: Path) -> None:
    class Strict(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        usage: dict[str, int]

    hit = _memory()._prepare_cached_response(Strict(usage={"n": 1}))
    assert hit.cache_hit is True and hit.usage == {}


def test_disk_answers_after_the_memory_is_reset_and_refills_it(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    cache.put({"q": 1}, "one")
    cache.reset_memory_cache()
    assert len(cache.memory_cache) == 0
    assert cache.get({"q": 1}) == "one"
    assert cache.cache_key({"q": 1}) in cache.memory_cache


def test_keys_ignore_order_and_listed_args_and_cover_models(tmp_path: Path) -> None:
    cache = _memory()

    class Point(pydantic.BaseModel):
        x: int

    assert cache.cache_key({"a": 1, "b": 2}) == cache.cache_key({"b": 2, "a": 1})
    assert cache.cache_key({"a": 1, "key": "x"}, ["key"]) == cache.cache_key({"a": 1, "key": "y"}, ["key"])
    assert cache.cache_key({"p": Point(x=1)}) != cache.cache_key({"p": Point(x=2)})
    assert cache.cache_key({"p": Allowed(1)}) != cache.cache_key({"p": Allowed(2)})
    assert len(cache.cache_key({"p": Point})) == 64


def test_an_unserializable_request_is_neither_found_nor_stored(tmp_path: Path) -> None:
    cache = _memory()
    request = {"thing": object(), "nan": math.nan}
    cache.put(request, "v")
    assert cache.get(request) is None and len(cache.memory_cache) == 0


def test_memory_entries_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="positive"):
        Cache(False, True, None, memory_max_entries=0)
    with pytest.raises(ConfigurationError, match="cannot be None"):
        Cache(False, True, None, memory_max_entries=None)
    assert Cache(False, False, None).get({"a": 1}) is None


def test_saved_memory_loads_only_with_allow_pickle(tmp_path: Path) -> None:
    cache = _memory()
    cache.put({"q": 1}, "one")
    path = tmp_path / "memory.pkl"
    cache.save_memory_cache(path)
    other = Cache(False, True, None)
    with pytest.raises(ConfigurationError, match="allow_pickle"):
        other.load_memory_cache(path)
    other.load_memory_cache(path, allow_pickle=True)
    assert other.get({"q": 1}) == "one"


def test_restricted_disk_reads_safe_types_and_arrays_and_refuses_others(tmp_path: Path) -> None:
    cache = Cache(True, False, tmp_path / "r", restrict_pickle=True, safe_types=[Allowed])
    cache.put({"k": "allowed"}, Allowed(3))
    cache.put({"k": "array"}, np.arange(3, dtype=np.float32))
    cache.put({"k": "other"}, NotAllowed(4))
    assert cache.get({"k": "allowed"}) == Allowed(3)
    np.testing.assert_array_equal(cache.get({"k": "array"}), np.arange(3, dtype=np.float32))
    assert cache.get({"k": "other"}) is None
    assert cache.cache_key({"k": "other"}) not in cache.disk_cache  # the unreadable entry is gone
    with pytest.raises(TypeError, match="must be types"):
        Cache(True, False, tmp_path / "bad", restrict_pickle=True, safe_types=["Allowed"])  # type: ignore[list-item]


def test_a_corrupt_disk_entry_is_a_miss(tmp_path: Path) -> None:
    cache = Cache(True, False, tmp_path / "c")
    cache.put({"k": 1}, {"good": True})
    key = cache.cache_key({"k": 1})
    for db in (tmp_path / "c").glob("*/cache.db"):
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE Cache SET value = X'00FF00' WHERE key = ?", (key,))
    assert cache.get({"k": 1}) is None


def test_request_cache_answers_repeats_from_dspex_cache(fresh_cache: Cache) -> None:
    calls: list[str] = []

    @request_cache(ignored_args_for_cache_key=["trace_id"])
    def shout(text: str, trace_id: int = 0) -> str:
        calls.append(text)
        return text.upper()

    assert shout(text="a", trace_id=1) == "A" and shout(text="a", trace_id=2) == "A"
    assert shout("b") == "B" and shout("b") == "B"
    assert calls == ["a", "b"]
    fresh_cache.reset_memory_cache()
    assert shout(text="a") == "A" and calls == ["a", "b"]  # from disk


def test_request_cache_keys_by_the_arguments_before_the_call(fresh_cache: Cache) -> None:
    @request_cache()
    async def consume(**kwargs: Any) -> int:
        kwargs.pop("drop")
        return len(kwargs)

    assert asyncio.run(consume(drop=1, keep=2)) == 1
    assert (
        fresh_cache.get({"keep": 2, "drop": 1, "_fn_identifier": f"{__name__}.{consume.__qualname__}"}) == 1
    )


def _counting_app(counter: list[int]) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        counter.append(1)
        body = {"choices": [{"message": {"role": "assistant", "content": f"answer {len(counter)}"}}]}
        return web.json_response({**body, "usage": {"prompt_tokens": 3, "completion_tokens": 2}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def test_lm_calls_use_dspex_cache_as_it_is_at_each_call(fresh_cache: Cache) -> None:
    counter: list[int] = []
    messages = [{"role": "user", "content": "hello"}]
    async with served_v1(_counting_app(counter)) as base:
        lm = dspex.LM("openai/sim-chat", api_base=base)
        first = await lm.acomplete(messages)
        again = await lm.acomplete(messages)
        assert (len(counter), again.cached, again.text) == (1, True, first.text)
        dspex.configure_cache(enable_disk_cache=False)  # a new, empty cache: the same LM misses
        await lm.acomplete(messages)
        await lm.acomplete(messages)
        assert len(counter) == 2
        dspex.cache.reset_memory_cache()
        await lm.acomplete(messages)
        assert len(counter) == 3
        dspex.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
        await lm.acomplete(messages)
        await lm.acomplete(messages)
        assert len(counter) == 5


def test_a_function_embedder_is_cached_in_dspex_cache(fresh_cache: Cache) -> None:
    seen: list[list[str]] = []

    def embed(texts: list[str]) -> list[list[float]]:
        seen.append(list(texts))
        return [[float(len(text)), 1.0] for text in texts]

    embedder = dspex.Embedder(embed)
    np.testing.assert_allclose(embedder(["ab", "c"]), [[2, 1], [1, 1]])
    np.testing.assert_allclose(embedder(["ab", "c"]), [[2, 1], [1, 1]])
    fresh_cache.reset_memory_cache()
    np.testing.assert_allclose(embedder(["ab", "c"]), [[2, 1], [1, 1]])
    assert seen == [["ab", "c"]]
    embedder(["ab", "c"], caching=False)
    dspex.Embedder(embed, caching=False)(["ab", "c"])
    assert len(seen) == 3


def test_dspys_disk_serialization_path_gives_the_restricted_disk(tmp_path: Path) -> None:
    import diskcache
    from dspex.clients.disk_serialization import DeserializationError, restricted_disk

    disk = restricted_disk(frozenset({(Allowed.__module__, Allowed.__qualname__)}))
    store = diskcache.FanoutCache(directory=str(tmp_path / "d"), shards=2, disk=disk)
    store["ok"], store["no"] = Allowed(1), NotAllowed(2)
    assert store["ok"] == Allowed(1)
    with pytest.raises(DeserializationError, match="not an allowed type"):
        store["no"]
    store.close()
