"""Canonical JSON and content ids: the one function every id in dspex is computed with.

An id is the SHA-256 of a value's canonical JSON, cut to 32 hex digits (128 bits). Canonical JSON
is what ``json.dumps`` gives with sorted keys, no spaces, UTF-8 kept as is and NaN refused, over
``model_dump(mode="json")`` for pydantic models. Whoever computes an id names the fields it leaves
out next to the call, so that two processes agree on what an id covers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

__all__ = ["ID_HEX_DIGITS", "canonical_json", "content_id"]

ID_HEX_DIGITS = 32


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` (a pydantic model or plain JSON data)."""
    return json.dumps(
        _plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def content_id(value: Any, *, exclude: Iterable[str] = ()) -> str:
    """The content id of ``value``, leaving out the top-level keys named in ``exclude``."""
    plain = _plain(value)
    leave_out = set(exclude)
    if leave_out:
        if not isinstance(plain, Mapping):
            raise TypeError("exclude= needs a mapping or a pydantic model")
        plain = {key: item for key, item in plain.items() if key not in leave_out}
    digest = hashlib.sha256(canonical_json(plain).encode("utf-8")).hexdigest()
    return digest[:ID_HEX_DIGITS]
