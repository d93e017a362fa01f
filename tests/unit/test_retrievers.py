from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dspex
from dspex.errors import ConfigurationError, ProgramLoadError
from dspex.retrievers import Embeddings, EmbeddingsWithScores, Retrieve

CORPUS = ["red apples grow on trees", "the ocean is deep and blue", "green grass in spring"]
_AXES = {"red": 0, "apple": 0, "ocean": 1, "blue": 1, "sea": 1, "grass": 2, "green": 2}


class AxisEmbedder:
    """A word-axis embedder: each known word adds to its axis; counts its calls and their sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, texts: list[str]) -> Any:
        self.batches.append(len(texts))
        vectors = np.full((len(texts), 3), 0.01, dtype=np.float32)
        for row, text in enumerate(texts):
            for word, axis in _AXES.items():
                if word in text:
                    vectors[row, axis] += 1.0
        return vectors


def test_the_nearest_passages_come_first_with_their_positions_and_scores() -> None:
    retriever = EmbeddingsWithScores(CORPUS, AxisEmbedder(), k=2)
    found = retriever("a blue sea")
    assert found.passages[0] == "the ocean is deep and blue"
    assert found.indices[0] == 1
    assert found.scores[0] > found.scores[1]
    assert found.scores[0] == pytest.approx(1.0, abs=0.01)  # normalised: cosine similarity
    assert "scores" not in Embeddings(CORPUS, AxisEmbedder(), k=1)("a blue sea")


def test_queries_from_many_threads_are_embedded_in_batches_and_answered_each_its_own() -> None:
    embedder = AxisEmbedder()
    retriever = Embeddings(CORPUS, embedder, k=1)
    queries = ["red apple", "blue ocean", "green grass"] * 20
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda q: retriever(q).indices[0], queries))
    assert answers == [0, 1, 2] * 20
    query_batches = embedder.batches[1:]  # the first call embedded the corpus
    assert sum(query_batches) == 60
    assert len(query_batches) < 60  # some queries shared an embedder call


def test_a_saved_retriever_answers_the_same_without_embedding_the_corpus_again(tmp_path: Path) -> None:
    original = Embeddings(CORPUS, AxisEmbedder(), k=2, normalize=False)
    original.save(tmp_path / "index")
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["config.json", "corpus_embeddings.npy"]
    embedder = AxisEmbedder()
    loaded = Embeddings.from_saved(tmp_path / "index", embedder)
    assert (loaded.k, loaded.normalize, loaded.corpus, loaded.index) == (2, False, CORPUS, None)
    assert loaded("green apples").indices == original("green apples").indices
    assert embedder.batches == [1]  # only the query was embedded


def test_loading_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Embeddings.from_saved(tmp_path / "nowhere", AxisEmbedder())
    Embeddings(CORPUS, AxisEmbedder()).save(tmp_path / "index")
    (tmp_path / "index" / "config.json").write_text('{"k": 2}')
    with pytest.raises(ProgramLoadError, match=r"config\.json: missing normalize, corpus, has_faiss_index"):
        Embeddings.from_saved(tmp_path / "index", AxisEmbedder())


def test_an_embedder_returning_the_wrong_shape_is_named() -> None:
    with pytest.raises(ConfigurationError, match=r"shape \(2, 3\) for the corpus \(3 texts\)"):
        Embeddings(CORPUS, lambda texts: np.zeros((2, 3)))
    with pytest.raises(ConfigurationError, match="k must be an integer >= 1"):
        Embeddings(CORPUS, AxisEmbedder(), k=0)


def test_retrieve_asks_the_configured_retrieval_model() -> None:
    asked: list[tuple[str, int]] = []

    def search(query: str, k: int) -> list[Any]:
        asked.append((query, k))
        return [{"long_text": "first"}, "second"][:k]

    with dspex.context(rm=search):
        assert Retrieve(k=2)("q").passages == ["first", "second"]
        assert Retrieve(k=2)("q", k=1).passages == ["first"]
    assert asked == [("q", 2), ("q", 1)]
    with pytest.raises(ConfigurationError, match=r"configure\(rm=...\)"):
        Retrieve()("q")
