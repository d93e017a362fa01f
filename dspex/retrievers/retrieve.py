"""``Retrieve``: DSPy's retrieval module over the configured retrieval model (``settings.rm``).

``dspex.configure(rm=my_search)`` sets the retrieval model: any callable taking ``(query, k=...)``
and returning passages (strings, objects with a ``long_text`` attribute, or mappings with a
``"long_text"`` key, as DSPy's retrieval clients return). ``Retrieve(k=3)(query)`` gives
``Prediction(passages=[...])``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dspex.configuration import current_settings
from dspex.errors import ConfigurationError
from dspex.primitives import Prediction

__all__ = ["Retrieve"]


class Retrieve:
    """Ask the configured retrieval model for the ``k`` passages most relevant to a query."""

    name = "Search"
    input_variable = "query"
    desc = "takes a search query and returns one or more potentially relevant passages from a corpus"

    def __init__(self, k: int = 3, callbacks: list[Any] | None = None) -> None:
        self.k = k
        self.callbacks = list(callbacks or [])

    def reset(self) -> None:
        """Nothing to reset: a retriever learns nothing (kept for DSPy's optimizers)."""

    def dump_state(self) -> dict[str, Any]:
        return {"k": self.k}

    def load_state(self, state: Mapping[str, Any]) -> Retrieve:
        for name, value in state.items():
            setattr(self, name, value)
        return self

    def __call__(self, query: str, k: int | None = None, **kwargs: Any) -> Prediction:
        return self.forward(query, k, **kwargs)

    def forward(self, query: str, k: int | None = None, **kwargs: Any) -> Prediction:
        rm = current_settings().rm
        if rm is None:
            raise ConfigurationError(
                "Retrieve needs a retrieval model: dspex.configure(rm=...) with a callable "
                "(query, k=...) -> passages"
            )
        found = rm(query, k=self.k if k is None else k, **kwargs)
        if isinstance(found, str) or not isinstance(found, Iterable):
            found = [found]
        return Prediction(passages=[_passage_text(passage) for passage in found])


def _passage_text(passage: Any) -> str:
    if isinstance(passage, str):
        return passage
    if isinstance(passage, Mapping) and "long_text" in passage:
        return str(passage["long_text"])
    text = getattr(passage, "long_text", None)
    if text is None:
        raise ConfigurationError(
            f"Retrieve: the retrieval model returned a {type(passage).__name__} passage; "
            "passages must be strings or carry a long_text"
        )
    return str(text)
