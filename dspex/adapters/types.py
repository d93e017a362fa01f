"""Values adapters hand back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the LM client is only a type here; adapters never import it at runtime
    from dspex.lm import LMResponse

__all__ = ["AdapterResult"]


@dataclass(frozen=True)
class AdapterResult:
    """One adapter call: the parsed outputs, the LM response they came from, and which adapter parsed them.

    ``adapter`` is ``"chat"`` or ``"json"``; it is ``"json"`` after ChatAdapter fell back to JSON.
    """

    outputs: dict[str, Any]
    response: LMResponse
    adapter: str
