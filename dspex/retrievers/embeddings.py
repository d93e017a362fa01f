"""``Embeddings``: top-k passages of a corpus by embedding similarity (DSPy's
``dspy.retrievers.Embeddings``).

The corpus is embedded once; each query is embedded and scored against every passage (an inner
product of normalised vectors, i.e. cosine similarity). Queries from many threads are embedded
together in batches (``Unbatchify``), so a threaded evaluation makes a few embedder calls rather
than one per query. Corpora of ``brute_force_threshold`` passages or more get a FAISS index for the
first, approximate pass (``pip install faiss-cpu``), then the candidates are scored exactly.

``save(path)`` writes a directory: ``config.json`` (k, normalize, the corpus), ``corpus_embeddings.npy``
and, when built, ``faiss_index.bin``: the files DSPy writes, so either library reads the other's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from dspex.errors import ConfigurationError, ProgramLoadError
from dspex.primitives import Prediction
from dspex.utils.lazy_import import require
from dspex.utils.unbatchify import Unbatchify

__all__ = ["Embeddings", "EmbeddingsWithScores"]

np: Any = require("numpy", feature="dspex.retrievers.Embeddings")

# A FAISS pass keeps this many candidates per wanted passage for the exact scoring after it.
_CANDIDATES_PER_RESULT = 10
_CONFIG_FIELDS = ("k", "normalize", "corpus", "has_faiss_index")

# (passages, their corpus indices, their scores) for one query.
SearchResult = tuple[list[str], list[int], list[float]]


class Embeddings:
    """Retrieve the ``k`` passages of ``corpus`` most similar to a query.

    ``embedder`` maps a list of texts to an array of shape ``(len(texts), dim)``: a ``dspex.Embedder``
    or any function. Calling the retriever returns ``Prediction(passages=[...], indices=[...])``.
    """

    def __init__(
        self,
        corpus: list[str],
        embedder: Callable[[list[str]], Any],
        k: int = 5,
        callbacks: list[Any] | None = None,
        cache: bool = False,
        brute_force_threshold: int = 20_000,
        normalize: bool = True,
    ) -> None:
        if cache:
            raise ConfigurationError(
                "Embeddings(cache=True): the retriever does not cache; give the embedder a cache instead"
            )
        if not isinstance(k, int) or k < 1:
            raise ConfigurationError(f"Embeddings: k must be an integer >= 1, got {k!r}")
        self.embedder = embedder
        self.k = k
        self.corpus = list(corpus)
        self.normalize = normalize
        self.callbacks = list(callbacks or [])
        self.corpus_embeddings = self._prepared(self._embed(self.corpus, "the corpus"))
        self.index = self._build_faiss() if len(self.corpus) >= brute_force_threshold else None
        self.search_fn = Unbatchify(self._batch_forward)

    def __call__(self, query: str) -> Prediction:
        return self.forward(query)

    def forward(self, query: str) -> Prediction:
        """The ``k`` nearest passages to ``query`` and their positions in the corpus."""
        passages, indices, _ = self.search_fn(query)
        return Prediction(passages=passages, indices=indices)

    # -- searching ---------------------------------------------------------------------------

    def _batch_forward(self, queries: list[str]) -> list[SearchResult]:
        query_embeddings = self._prepared(self._embed(queries, "the queries"))
        candidates = None
        if self.index is not None:
            candidates = self.index.search(query_embeddings, self.k * _CANDIDATES_PER_RESULT)[1]
        return self._ranked(query_embeddings, candidates)

    def _ranked(self, queries: Any, candidates: Any | None) -> list[SearchResult]:
        if candidates is None:
            scores = queries @ np.ascontiguousarray(self.corpus_embeddings).T
        else:
            candidates = np.where(candidates < 0, 0, candidates)  # FAISS pads short lists with -1
            scores = np.einsum("qd,qkd->qk", queries, self.corpus_embeddings[candidates])
        order = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        rows = np.arange(len(queries))[:, None]
        positions = order if candidates is None else candidates[rows, order]
        top_scores = scores[rows, order]
        return [
            ([self.corpus[i] for i in found], [int(i) for i in found], [float(s) for s in found_scores])
            for found, found_scores in zip(positions, top_scores, strict=True)
        ]

    def _embed(self, texts: Sequence[str], what: str) -> Any:
        embeddings = np.asarray(self.embedder(list(texts)), dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
            raise ConfigurationError(
                f"Embeddings: the embedder returned shape {embeddings.shape} for {what} "
                f"({len(texts)} texts); it must return one vector per text, shape (n, dim)"
            )
        return embeddings

    def _prepared(self, embeddings: Any) -> Any:
        if not self.normalize:
            return embeddings
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        return embeddings / np.maximum(norms, 1e-10)

    def _build_faiss(self) -> Any:
        try:
            import faiss
        except ImportError as exc:
            raise ConfigurationError(
                f"Embeddings: a corpus of {len(self.corpus)} passages is searched with a FAISS index; "
                "`pip install faiss-cpu`, or raise brute_force_threshold above the corpus size"
            ) from exc
        dim = self.corpus_embeddings.shape[1]
        partitions = int(2 * np.sqrt(len(self.corpus)))
        index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, partitions, 32, 8)
        index.train(self.corpus_embeddings)
        index.add(self.corpus_embeddings)
        index.nprobe = min(16, partitions)
        return index

    # -- saving ------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the corpus, its embeddings and the settings (and the FAISS index, if any) to ``path``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "k": self.k,
            "normalize": self.normalize,
            "corpus": self.corpus,
            "has_faiss_index": self.index is not None,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        np.save(folder / "corpus_embeddings.npy", self.corpus_embeddings)
        if self.index is not None:
            import faiss

            faiss.write_index(self.index, str(folder / "faiss_index.bin"))

    def load(self, path: str | os.PathLike[str], embedder: Callable[[list[str]], Any]) -> Self:
        """Read what ``save`` wrote into this retriever (no corpus embedding is recomputed)."""
        folder = Path(path)
        config_path, embeddings_path = folder / "config.json", folder / "corpus_embeddings.npy"
        for needed in (folder, config_path, embeddings_path):
            if not needed.exists():
                raise FileNotFoundError(
                    f"{needed}: not found (a folder written by Embeddings.save is needed)"
                )
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ProgramLoadError(f"{config_path}: not valid JSON ({exc})") from exc
        missing = [name for name in _CONFIG_FIELDS if name not in config]
        if missing:
            raise ProgramLoadError(f"{config_path}: missing {', '.join(missing)}")
        self.k, self.normalize, self.corpus = config["k"], config["normalize"], list(config["corpus"])
        self.embedder = embedder
        self.corpus_embeddings = np.load(embeddings_path)
        self.index = self._read_faiss(folder / "faiss_index.bin") if config["has_faiss_index"] else None
        return self

    @classmethod
    def from_saved(cls, path: str | os.PathLike[str], embedder: Callable[[list[str]], Any]) -> Self:
        """A retriever read from a folder written by ``save``, without embedding the corpus again."""
        instance = cls.__new__(cls)
        instance.callbacks = []
        instance.search_fn = Unbatchify(instance._batch_forward)
        return instance.load(path, embedder)

    @staticmethod
    def _read_faiss(index_path: Path) -> Any:
        if not index_path.exists():
            return None
        try:
            import faiss
        except ImportError:
            return None  # the saved embeddings still serve an exact (slower) search
        return faiss.read_index(str(index_path))


class EmbeddingsWithScores(Embeddings):
    """``Embeddings`` that also returns each passage's similarity (``scores``, best first)."""

    def forward(self, query: str) -> Prediction:
        passages, indices, scores = self.search_fn(query)
        return Prediction(passages=passages, indices=indices, scores=scores)
