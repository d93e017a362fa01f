"""``Embedder``: texts to vectors, from an OpenAI-compatible ``/embeddings`` endpoint or a function.

    embedder = dspex.Embedder("openai/text-embedding-3-small", batch_size=100)  # through dspex.LM
    embedder = dspex.Embedder(my_model.encode)                                  # any function
    vectors = embedder(["hello", "world"])       # 2-D numpy array when numpy is installed
    vector = await embedder.acall("hello")       # one text: one vector

As DSPy's ``dspy.Embedder(model, batch_size=200, caching=True, **kwargs)``: a hosted model is named
by a string; a custom model is a callable from a list of texts to a list (or array) of vectors,
sync or async, called once per batch of ``batch_size`` texts with ``**kwargs``. A hosted model's
requests go through :meth:`dspex.LM.aembed` of an LM built from the name (``kwargs`` are that LM's
arguments, e.g. ``api_base``, ``api_key``; ``caching`` is its response cache), or of the LM given as
``model``. A function's vectors are cached in ``dspex.cache`` too (unless ``caching=False``), keyed
by the function, the texts and the keywords, as DSPy does. Results are numpy ``float32`` arrays when
numpy is importable (DSPy's type), else lists.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from dspex._sync import run_sync
from dspex.errors import ConfigurationError
from dspex.lm.cache import global_cache
from dspex.lm.client import LM

__all__ = ["Embedder"]


def _as_output(vectors: list[list[float]], single: bool) -> Any:
    """numpy float32 (a 1-D vector for one text) when numpy is there, else plain lists."""
    try:
        import numpy as np
    except ImportError:  # numpy is optional for dspex: lists carry the same numbers
        return vectors[0] if single else vectors
    array = np.asarray(vectors, dtype=np.float32)
    return array[0] if single else array


def _rows(value: Any) -> list[list[float]]:
    """A function's answer (a list of vectors or a 2-D array) as lists of floats."""
    return [[float(x) for x in row] for row in value]


class Embedder:
    """Embeddings of texts from a hosted model (a name or a :class:`dspex.LM`) or a function."""

    def __init__(
        self, model: str | LM | Callable[..., Any], batch_size: int = 200, caching: bool = True, **kwargs: Any
    ) -> None:
        if not isinstance(model, str | LM) and not callable(model):
            raise ConfigurationError(
                f"Embedder model must be a model name, a dspex.LM or a callable, got {type(model).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        self.caching = caching
        self.default_kwargs = kwargs
        self._lm: LM | None = model if isinstance(model, LM) else None

    def __repr__(self) -> str:
        name = (
            self.model if isinstance(self.model, str) else getattr(self.model, "__name__", repr(self.model))
        )
        return f"Embedder({name!s}, batch_size={self.batch_size})"

    def __call__(
        self,
        inputs: str | Sequence[str],
        batch_size: int | None = None,
        caching: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Vectors of ``inputs`` (one vector for a single string). Sync :meth:`acall`."""
        if callable(self.model) and not isinstance(self.model, LM) and not _is_async(self.model):
            # A plain function needs no event loop: call it here (DSPy's KNN embeds in __init__).
            texts, single = _texts(inputs)
            size = batch_size or self.batch_size
            merged = {**self.default_kwargs, **kwargs}
            vectors: list[list[float]] = []
            use_cache = self.caching if caching is None else caching
            for start in range(0, len(texts), size):
                batch = texts[start : start + size]
                found = _cached(self.model, batch, merged) if use_cache else None
                if found is None:
                    answer = self.model(batch, **merged)
                    if inspect.isawaitable(answer):
                        answer = run_sync(_awaited(answer))
                    found = _rows(answer)
                    if use_cache:
                        _store(self.model, batch, merged, found)
                vectors.extend(found)
            return _as_output(vectors, single)
        return run_sync(self.acall(inputs, batch_size=batch_size, caching=caching, **kwargs))

    async def acall(
        self,
        inputs: str | Sequence[str],
        batch_size: int | None = None,
        caching: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Vectors of ``inputs``, batch after batch (one vector for a single string)."""
        texts, single = _texts(inputs)
        size = batch_size or self.batch_size
        merged = {**self.default_kwargs, **kwargs}
        vectors: list[list[float]] = []
        for start in range(0, len(texts), size):
            vectors.extend(await self._batch(texts[start : start + size], caching, merged))
        return _as_output(vectors, single)

    async def _batch(
        self, texts: list[str], caching: bool | None, kwargs: dict[str, Any]
    ) -> list[list[float]]:
        if isinstance(self.model, str | LM):
            return await self._hosted(caching).aembed(texts)
        use_cache = self.caching if caching is None else caching
        found = _cached(self.model, texts, kwargs) if use_cache else None
        if found is None:
            answer = self.model(texts, **kwargs)
            found = _rows(await answer if inspect.isawaitable(answer) else answer)
            if use_cache:
                _store(self.model, texts, kwargs, found)
        return found

    def _hosted(self, caching: bool | None) -> LM:
        """The LM that answers a hosted model's requests (built once from the name)."""
        if self._lm is not None:
            return self._lm
        assert isinstance(self.model, str)  # narrowed: the other kinds never get here
        cache = self.caching if caching is None else caching
        self._lm = LM(self.model, cache=cache, **self.default_kwargs)
        return self._lm


# A function's vectors are cached in dspex.cache (DSPy's Embedder does so too), keyed by the
# function (its source, or its name), the texts and the call's keywords; never by key or endpoint.
_EMBED_ID = "dspex.lm.embedder.Embedder"
_NOT_IN_KEY = ("api_key", "api_base", "base_url")


def _embed_request(model: Any, texts: list[str], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**kwargs, "model": model, "batch_inputs": list(texts), "_fn_identifier": _EMBED_ID}


def _cached(model: Any, texts: list[str], kwargs: dict[str, Any]) -> list[list[float]] | None:
    found = global_cache().get(_embed_request(model, texts, kwargs), _NOT_IN_KEY)
    return None if found is None else _rows(found)


def _store(model: Any, texts: list[str], kwargs: dict[str, Any], rows: list[list[float]]) -> None:
    try:  # a float32 array: what callers get back anyway, and cheap to copy on each hit
        import numpy as np

        value: Any = np.asarray(rows, dtype=np.float32)
    except ImportError:
        value = rows
    global_cache().put(_embed_request(model, texts, kwargs), value, _NOT_IN_KEY)


def _is_async(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004  # an object whose __call__ is async
    )


async def _awaited(value: Any) -> Any:
    return await value


def _texts(inputs: str | Sequence[str]) -> tuple[list[str], bool]:
    """The texts to embed, and whether a single string was given; anything else: ValueError."""
    single = isinstance(inputs, str)
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not all(isinstance(text, str) for text in texts):
        raise ConfigurationError("All inputs must be strings.")
    return texts, single
