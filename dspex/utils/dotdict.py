"""``dotdict``: a dict whose keys read as attributes (DSPy's ``dspy.dsp.utils.utils.dotdict``).

DSPy programs and tests build provider-shaped responses with it
(``dotdict(choices=[dotdict(message=...)])``); ``from dspex.dsp.utils.utils import dotdict`` finds it.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["dotdict"]


class dotdict(dict[str, Any]):  # DSPy's lower-case name
    """``d.key`` is ``d["key"]``; a missing key is an ``AttributeError`` (``getattr(d, k, None)`` works)."""

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") and key.endswith("__"):  # copy, pickle and friends probe dunders
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{key}'") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __deepcopy__(self, memo: dict[int, Any]) -> dotdict:
        return dotdict(copy.deepcopy(dict(self), memo))
