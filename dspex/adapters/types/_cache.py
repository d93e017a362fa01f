"""A per-signature-class cache for what the special types need to know about a signature.

Formatting runs thousands of times a second with the same few signature classes, so what depends
only on the signature (is there a History field? which outputs are native types?) is worked out
once. Signature classes hash slowly (their metaclass defines equality), so entries are keyed by
``id()`` and hold a weak reference that drops the entry when the class goes away; a guard object
(the fields mapping the answer was computed from) makes code that swaps fields recompute.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["SignatureCache"]

_T = TypeVar("_T")


class SignatureCache(Generic[_T]):
    """``get(signature, guard, build)``: ``build(signature)`` once per signature class and guard."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[type], Any, _T]] = {}

    def get(self, signature: type, guard: Any, build: Callable[[type], _T]) -> _T:
        key = id(signature)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is signature and entry[1] is guard:
            return entry[2]
        value = build(signature)
        self._entries[key] = (weakref.ref(signature, self._forget(key)), guard, value)
        return value

    def _forget(self, key: int) -> Callable[[weakref.ref[type]], None]:
        # Called when the class is collected, before its id can be reused.
        entries = self._entries

        def forget(_ref: weakref.ref[type]) -> None:
            entries.pop(key, None)

        return forget
